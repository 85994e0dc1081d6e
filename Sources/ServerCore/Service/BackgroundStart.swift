import LinuxSystem

/// Going to the background as QEMU's ivshmem-server does without -F, with
/// an honest exit status and a pid file: the one daemonising path. The
/// starting process waits until the background one serves (exit 0) or
/// has failed (its status).
public final class BackgroundStart {
    private let parent: Daemon.WaitingParent?
    private var pidFile: PidFile?

    /// Forks, unless `detaching` is false (the foreground); in the child
    /// (or the foreground process) writes `pidFile`. Call it after the
    /// files are made and before any loop or thread exists.
    public init(detaching: Bool, pidFile path: String?) throws {
        parent = detaching ? try Daemon.detach() : nil
        pidFile = try path.map(PidFile.init(path:))
    }

    /// Serving: the starting process may exit 0.
    public func ready() {
        parent?.ready()
    }

    /// Stopped: the pid file goes (while it still names us).
    public func finish() {
        pidFile?.remove()
        pidFile = nil
    }

    deinit { finish() }
}
