import Glibc
import VSoCFormat

/// The group database and the standard error stream, for the command line.
public enum HostSystem {
    /// The id of a group given by name, if the system knows it.
    public static func groupID(named name: String) -> UInt32? {
        getgrnam(name).map { $0.pointee.gr_gid }
    }

    /// The real user id of this process.
    public static var currentUID: UInt32 { getuid() }

    /// Whether this process may read `path`.
    public static func isReadable(_ path: String) -> Bool { access(path, R_OK) == 0 }

    /// A peer that vanishes must be an EPIPE, never a SIGPIPE (every send
    /// already uses MSG_NOSIGNAL; this is belt and braces).
    public static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    /// Raises the soft limit on open files to the hard one (systemd gives
    /// services 1024 soft, 524288 hard); the soft limit now in force.
    public static func raiseOpenFileLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// True when standard error is systemd's journal: JOURNAL_STREAM
    /// ("DEVICE:INODE") names the very file that fd 2 is (a child that
    /// inherited the variable but writes elsewhere does not match).
    public static func standardErrorIsJournal() -> Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return journalStream(String(cString: value), names: UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// JOURNAL_STREAM's "DEVICE:INODE" (decimal) against a file's identity.
    static func journalStream(_ value: String, names device: UInt64, _ inode: UInt64) -> Bool {
        let parts = value.split(separator: ":")
        return parts.count == 2 && UInt64(parts[0]) == device && UInt64(parts[1]) == inode
    }

    /// Seconds since the epoch, from the real-time clock.
    public static func currentSecond() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now.tv_sec
    }

    /// Writes `text` to fd 2 in one call (the `stderr` FILE is a global
    /// Swift 6 rejects, and log lines should not interleave).
    public static func writeToStandardError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }

    /// Log lines to fd 2: one write(2) unless it is cut short (then the
    /// rest follows) or interrupted. Nothing is retried after an error: a
    /// log that cannot be written must not stop the server.
    public static func writeToStandardError(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}
