import Glibc

/// Whether standard error, where the log goes, is systemd's journal.
public enum StandardError {
    /// True when standard error is systemd's journal: JOURNAL_STREAM
    /// ("DEVICE:INODE") names the very file that fd 2 is (a child that
    /// inherited the variable but writes elsewhere does not match).
    public static func isJournal() -> Bool {
        guard let value = getenv("JOURNAL_STREAM") else { return false }
        var info = stat()
        guard (try? Posix.retrying(.fstat, nil, "standard error") { fstat(2, &info) }) != nil else { return false }
        return journalStream(String(cString: value), names: UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// JOURNAL_STREAM's "DEVICE:INODE" (decimal) against a file's identity.
    package static func journalStream(_ value: String, names device: UInt64, _ inode: UInt64) -> Bool {
        let parts = value.split(separator: ":")
        return parts.count == 2 && UInt64(parts[0]) == device && UInt64(parts[1]) == inode
    }
}
