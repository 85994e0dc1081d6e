import LinuxSystem

/// How many connections of `perConnection` fds the open-file limit (raised
/// to its hard limit first) leaves room for, after `reserved` for
/// everything else.
public enum OpenFiles {
    public static func capacity(reserving reserved: Int, perConnection: Int) -> (connections: Int, limit: Int) {
        let limit = ProcessLimits.raiseOpenFileLimit()
        return (max(0, (limit - reserved) / max(perConnection, 1)), limit)
    }
}
