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

extension EventFD {
    /// Reads and resets every counter of `fds` that is not 0, asking which
    /// with one poll for all (none of them blocks, whatever its mode); the
    /// counts, 0 for each that was 0.
    public static func drain(all fds: [Int32]) throws(SystemError) -> [UInt64] {
        var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let ready = try Posix.retrying(.poll, "poll eventfds") { poll(&entries, nfds_t(entries.count), 0) }
        var counts = [UInt64](repeating: 0, count: fds.count)
        guard ready > 0 else { return counts }
        for (index, entry) in entries.enumerated() where entry.revents & Int16(POLLIN) != 0 {
            var value: UInt64 = 0
            let count = try Posix.retryingUnlessWouldBlock(.read, "read eventfd") { () -> Int in Glibc.read(entry.fd, &value, 8) }
            if count != nil { counts[index] = value }
        }
        return counts
    }

    /// True when `fd` is an eventfd (what /proc says it is).
    package static func isEventFD(_ fd: OwnedFD) -> Bool {
        ProcFS.target(ofDescriptor: fd.rawValue) == "anon_inode:[eventfd]"
    }
}
