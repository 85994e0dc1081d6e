import CLinux
import Glibc

/// The system calls of the client, each retried on EINTR and reporting
/// errno; `fail` turns an errno into the caller's typed error.
enum Syscall {
    static func retrying(_ call: () -> Int) -> (result: Int, errno: Int32) {
        while true {
            let result = call()
            if result >= 0 { return (result, 0) }
            if errno != EINTR { return (result, errno) }
        }
    }

    /// poll(2) on one fd until it reports `events`, the deadline passes
    /// (false), or an error. EINTR restarts with the time that is left.
    static func waitUntilReadable(_ fd: Int32, deadline: ContinuousClock.Instant?) -> (ready: Bool, errno: Int32) {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let result = poll(&entry, 1, milliseconds(until: deadline))
            if result > 0 { return (true, 0) }
            if result == 0 { return (false, 0) }
            if errno != EINTR { return (false, errno) }
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
        let (ready, code) = retrying { Int(ivs_poll_nanoseconds(&entries, count, nanoseconds)) }
        return (ready, code)
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

    /// Adds 1 to an eventfd's counter. A counter already at its maximum
    /// means an interrupt is pending anyway.
    static func signalEventFD(_ fd: Int32) -> Int32 {
        var one: UInt64 = 1
        let (result, code) = retrying { write(fd, &one, 8) }
        return result == 8 || code == EAGAIN ? 0 : code
    }

    /// Reads an eventfd's counter, resetting it: nil when it is 0.
    static func drainEventFD(_ fd: Int32) -> (count: UInt64?, errno: Int32) {
        var count: UInt64 = 0
        let (result, code) = retrying { read(fd, &count, 8) }
        if result == 8 { return (count, 0) }
        return (nil, code == EAGAIN ? 0 : code)
    }

    /// Up to `count` bytes of a file from `offset` (fewer at its end), with
    /// pread, into uninitialized memory (a large read of a sparse file
    /// writes no zeros first); errno 0 on success.
    static func readFile(_ fd: Int32, at offset: Int = 0, count: Int) -> (bytes: [UInt8], errno: Int32) {
        var failure: Int32 = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            while initialized < count {
                let (result, code) = retrying {
                    pread(fd, buffer.baseAddress! + initialized, count - initialized, off_t(offset + initialized))
                }
                if code != 0 { failure = code; return }
                if result == 0 { return }
                initialized += result
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
