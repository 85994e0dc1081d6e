import Glibc

/// What this process may hold and what kills it, set once at start.
public enum ProcessLimits {
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
}
