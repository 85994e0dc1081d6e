import CLinux
import Glibc

/// Going to the background as QEMU's ivshmem-server does without -F, but
/// with an honest exit status: the starting process waits until the
/// background one is serving (exit 0) or has failed (its status), so a
/// script that starts the server knows whether it runs.
public enum Daemon {
    /// Forks. In the parent this never returns: it exits 0 once the child
    /// calls `WaitingParent.ready()`, or with the child's status if the child
    /// ends first. The child (a new session, standard input /dev/null,
    /// standard output and error kept) gets the `WaitingParent` to signal with.
    /// Call it before any thread or libuv loop exists.
    public static func detach() throws(SystemError) -> WaitingParent {
        var ends: [Int32] = [-1, -1]
        try Posix.retrying(.pipe) { ivs_pipe_cloexec(&ends) }
        let reader = OwnedFD(taking: ends[0])
        let writer = OwnedFD(taking: ends[1])
        let pid = fork()
        if pid < 0 { throw SystemError(.fork) }
        if pid > 0 {
            writer.close()
            // One byte: the child is serving. The end of the pipe: it ended first.
            var byte: UInt8 = 0
            let read = (try? Posix.retrying(.read, "wait for the server to start") { Glibc.read(reader.rawValue, &byte, 1) }) ?? 0
            if read == 1 { _exit(0) }
            _exit((try? Termination.wait(for: pid).shellStatus) ?? 1)
        }
        reader.close()
        // Already a group leader only if our parent made us one; then the
        // session stays, which changes nothing for a server.
        _ = setsid()
        let null = OwnedFD(taking: try Posix.retrying(.open, nil, "/dev/null") { open("/dev/null", O_RDONLY | O_CLOEXEC) })
        try Posix.retrying(.fcntl, "dup2 /dev/null to standard input") { dup2(null.rawValue, 0) }
        // The locks are ours now: their files name us, not the parent.
        InstanceLock.recordOwnerAfterFork()
        return WaitingParent(writer)
    }

    /// The child's end: tells the waiting parent that start-up succeeded.
    public final class WaitingParent {
        private let fd: OwnedFD
        init(_ fd: OwnedFD) { self.fd = fd }

        public func ready() {
            guard fd.isOpen else { return }
            var byte: UInt8 = 1
            // The parent gone (killed) is no reason for the server to stop.
            _ = try? Posix.retrying(.write, "tell the starting process") { write(fd.rawValue, &byte, 1) }
            fd.close()
        }
    }
}
