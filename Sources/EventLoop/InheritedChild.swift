import CLinux
import Glibc
import LinuxSystem

/// A child that an earlier image of this process started: this image's
/// libuv does not know it, so its exit is seen through a pidfd (readable
/// once it ends) and it is reaped with waitpid.
public final class InheritedChild: LaunchedProcess {
    public let pid: Int32
    public private(set) var termination: Termination?
    private let pidfd: OwnedFD
    private var poll: PollHandle?
    private var onExit: ((Termination) -> Void)?

    public init(loop: EventLoop, pid: Int32, onExit: @escaping (Termination) -> Void) throws {
        self.pid = pid
        pidfd = try Posix.openProcess(pid, "of the VM (pid \(pid))")
        self.onExit = onExit
        poll = try PollHandle(loop: loop, fd: pidfd.rawValue) { [unowned self] _, _ in self.reap() }
        poll?.watch(readable: true, writable: false)
        reap()  // it may have ended already
    }

    public func signal(_ signal: Int32) {
        guard termination == nil else { return }
        // Not reaped yet, so the pid is still this child's: it takes the signal.
        try? Posix.signal(signal, to: pid)
    }

    private func reap() {
        guard termination == nil, let ended = Termination.reap(pid) else { return }
        termination = ended
        poll?.close()
        poll = nil
        pidfd.close()
        let callback = onExit
        onExit = nil
        if let termination { callback?(termination) }
    }
}
