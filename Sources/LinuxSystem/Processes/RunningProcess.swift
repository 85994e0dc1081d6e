import CLinux
import Glibc

/// A process held by a pidfd: it tells whether that very process still
/// runs, so what was read from its /proc entry can be kept while it does
/// (a pid is not reused while its process runs).
package final class RunningProcess {
    package let pid: Int32
    package let handle: OwnedFD

    /// Nil when the process is gone or pidfds are not available.
    package init?(pid: Int32) {
        guard pid > 0 else { return nil }
        guard let handle = try? Posix.openProcess(pid) else { return nil }
        self.pid = pid
        self.handle = handle
    }

    /// False once the process has exited (its pidfd polls readable).
    package var isRunning: Bool {
        !((try? Posix.isReadable(handle, within: .zero)) ?? true)
    }
}
