import CLinux
import Glibc

/// Eventfds: a kernel counter that one side writes and the other polls.
public enum EventFD {
    /// A non-blocking, close-on-exec eventfd with counter 0. Non-blocking
    /// from the start: QEMU makes its copies non-blocking anyway, and the
    /// flag lives on the shared open file.
    public static func create() throws(SystemError) -> OwnedFD {
        OwnedFD(taking: try Posix.retrying(.eventfd) { ivs_eventfd_nonblocking(0) })
    }

    /// Adds `value` to the counter. A counter already at its maximum (the
    /// write would block) means a wake-up is pending anyway.
    public static func signal(_ fd: OwnedFD, value: UInt64 = 1) throws(SystemError) {
        var value = value
        _ = try Posix.retryingUnlessWouldBlock(.write, "write eventfd") { () -> Int in Glibc.write(fd.rawValue, &value, 8) }
    }

    /// Reads and resets the counter with one read, no poll first: nil when
    /// it is 0. Only for an eventfd known to be non-blocking (a client makes
    /// every eventfd it receives so); see `drain` otherwise.
    public static func take(_ fd: OwnedFD) throws(SystemError) -> UInt64? {
        var value: UInt64 = 0
        let count = try Posix.retryingUnlessWouldBlock(.read, "read eventfd") { () -> Int in Glibc.read(fd.rawValue, &value, 8) }
        return count == 8 ? value : nil
    }

    /// Reads and resets the counter; nil when it is 0. Polls first, because
    /// QEMU can leave an eventfd blocking (see `QemuCommandLine`).
    public static func drain(_ fd: OwnedFD) throws(SystemError) -> UInt64? {
        guard try Posix.isReadable(fd, within: .zero) else { return nil }
        return try take(fd)
    }
}

/// A fixed set of eventfds drained together, asked with one poll for all
/// (none of them blocks, whatever its mode; one poll costs less than a
/// read of each, and than keeping them in an epoll set, which would tax
/// every ring). The poll entries are made once, so a drain that finds
/// every counter at 0 allocates nothing.
package final class EventFDSet {
    private let entries: UnsafeMutablePointer<pollfd>
    package let count: Int

    /// The fds stay the caller's; they must outlive this set.
    package init(_ fds: [Int32]) {
        count = fds.count
        entries = .allocate(capacity: max(fds.count, 1))
        for (index, fd) in fds.enumerated() { (entries + index).initialize(to: pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
    }

    deinit { entries.deallocate() }

    /// Reads and resets every counter that is not 0: the counts, in the
    /// order of the fds; nil when all were 0.
    package func drain() throws(SystemError) -> [UInt64]? {
        let ready = try Posix.retrying(.poll, "poll eventfds") { poll(entries, nfds_t(count), 0) }
        guard ready > 0 else { return nil }
        var counts = [UInt64](repeating: 0, count: count)
        for index in 0..<count where entries[index].revents & Int16(POLLIN) != 0 {
            var value: UInt64 = 0
            let fd = entries[index].fd
            let read = try Posix.retryingUnlessWouldBlock(.read, "read eventfd") { () -> Int in Glibc.read(fd, &value, 8) }
            if read != nil { counts[index] = value }
        }
        return counts
    }
}

extension EventFD {
    /// True when `fd` is an eventfd (what /proc says it is).
    package static func isEventFD(_ fd: OwnedFD) -> Bool {
        ProcFS.target(ofDescriptor: fd.rawValue) == "anon_inode:[eventfd]"
    }
}
