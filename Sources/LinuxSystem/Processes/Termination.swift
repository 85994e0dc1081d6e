import Glibc

/// How a child ended, from waitpid's status word: its exit code, or the
/// signal that killed it. The one decoder of wait statuses (the C macros
/// do not import).
public enum Termination: Equatable, Sendable {
    case exited(Int32)
    case signalled(Int32)

    /// WIFEXITED / WEXITSTATUS / WTERMSIG.
    public init(waitStatus status: Int32) {
        self = status & 0x7F == 0 ? .exited((status >> 8) & 0xFF) : .signalled(status & 0x7F)
    }

    /// A shell's convention: the code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case let .exited(code): return code
        case let .signalled(signal): return 128 + signal
        }
    }

    /// Reaps `pid` if it has ended (WNOHANG); nil while it runs.
    package static func reap(_ pid: Int32) -> Termination? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        return Termination(waitStatus: status)
    }

    /// Waits for `pid` to end.
    package static func wait(for pid: Int32) throws(SystemError) -> Termination {
        var status: Int32 = 0
        try Posix.retrying(.waitpid) { waitpid(pid, &status, 0) }
        return Termination(waitStatus: status)
    }
}
