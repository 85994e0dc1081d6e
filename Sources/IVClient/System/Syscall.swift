import CLinux
import Glibc
import LinuxSystem

/// The client's system calls, on the system layer's one retry helper
/// (`Posix`: EINTR retried, errno kept); each reports errno (0 for
/// success), which the caller turns into an IVClientError naming its
/// socket and region.
enum Syscall {
    /// poll(2) on one fd until it is readable (true), the deadline passes
    /// (false), or an error. EINTR restarts with the time that is left.
    static func waitUntilReadable(_ fd: Int32, deadline: ContinuousClock.Instant?) -> (ready: Bool, errno: Int32) {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        do {
            let ready = try Posix.retrying(.poll) { poll(&entry, 1, milliseconds(until: deadline)) }
            return (ready > 0, 0)
        } catch {
            return (false, error.errno)
        }
    }

    /// poll(2) on `entries` for at most `timeout` (nil: no limit), with
    /// nanosecond resolution; how many entries are ready (0 on timeout).
    static func wait(_ entries: inout [pollfd], timeout: Duration?) -> (ready: Int, errno: Int32) {
        let nanoseconds: Int64 = timeout.map { duration in
            let (seconds, attoseconds) = max(duration, .zero).components
            return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
                ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        } ?? -1
        let count = UInt(entries.count)
        do {
            return (Int(try Posix.retrying(.poll) { ivs_poll_nanoseconds(&entries, count, nanoseconds) }), 0)
        } catch {
            return (0, error.errno)
        }
    }

    /// The poll timeout for a deadline: -1 for none, rounded up otherwise.
    static func milliseconds(until deadline: ContinuousClock.Instant?) -> Int32 {
        guard let deadline else { return -1 }
        let left = deadline - ContinuousClock.now
        if left <= .zero { return 0 }
        let (seconds, attoseconds) = left.components
        let total = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: total)
    }

    /// Adds `value` to an eventfd's counter. A counter already at its
    /// maximum means an interrupt is pending anyway.
    static func signalEventFD(_ fd: OwnedFD, value: UInt64 = 1) -> Int32 {
        do {
            try EventFD.signal(fd, value: value)
            return 0
        } catch {
            return error.errno == EAGAIN ? 0 : error.errno
        }
    }

    /// Reads an eventfd's counter, resetting it: nil when it is 0. One
    /// read, no poll first (EventFD.drain polls because QEMU may leave the
    /// server's copies blocking): the client makes every eventfd it
    /// receives non-blocking, and the worker drains on each interrupt.
    static func drainEventFD(_ fd: OwnedFD) -> (count: UInt64?, errno: Int32) {
        var count: UInt64 = 0
        do {
            let read = try Posix.retryingUnlessWouldBlock(.read, "read eventfd") { Glibc.read(fd.rawValue, &count, 8) }
            return (read == 8 ? count : nil, 0)
        } catch {
            return (nil, error.errno)
        }
    }

    /// Up to `count` bytes of a file from `offset` (fewer at its end), with
    /// pread, into uninitialized memory (a large read of a sparse file
    /// writes no zeros first); errno 0 on success.
    static func readFile(_ fd: Int32, at offset: Int = 0, count: Int) -> (bytes: [UInt8], errno: Int32) {
        var failure: Int32 = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            while initialized < count {
                let done = initialized
                let outcome = Result { () throws(SystemError) -> Int in
                    try Posix.retrying(.pread) { pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done)) }
                }
                switch outcome {
                case .failure(let error):
                    failure = error.errno
                    return
                case .success(0):
                    return
                case .success(let result):
                    initialized += result
                }
            }
        }
        return (failure == 0 ? bytes : [], failure)
    }

    /// Sets O_NONBLOCK (eventfds must be non-blocking: several clients may
    /// read one, and a blocking read after a lost race would hang).
    static func makeNonBlocking(_ fd: Int32) -> Int32 {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0 else { return errno }
        if flags & O_NONBLOCK != 0 { return 0 }
        return fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 ? 0 : errno
    }
}

/// Waits that grow from 50 µs to 5 ms, for retrying what only the peer can
/// unblock (a signal table it has not drained yet) without spinning the CPU
/// and without sleeping long when the peer is quick.
struct RetryBackoff {
    static let first: Duration = .microseconds(50)
    static let longest: Duration = .milliseconds(5)
    private(set) var next = first

    /// The wait to make now; the one after is twice as long, up to `longest`.
    mutating func advance() -> Duration {
        defer { next = min(next * 2, Self.longest) }
        return next
    }

    mutating func reset() { next = Self.first }
}
