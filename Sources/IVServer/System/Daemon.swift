import CLinux
import Glibc
import LinuxSystem

/// Going to the background as QEMU's ivshmem-server does without -F, but
/// with an honest exit status: the starting process waits until the
/// background one is serving (exit 0) or has failed (its status), so a
/// script that starts the server knows whether it runs.
public enum Daemon {
    /// Forks. In the parent this never returns: it exits 0 once the child
    /// calls `Readiness.ready()`, or with the child's status if the child
    /// ends first. The child (a new session, standard input /dev/null,
    /// standard output and error kept) gets the `Readiness` to signal with.
    /// Call it before any thread or libuv loop exists.
    public static func detach() throws(SystemError) -> Readiness {
        var ends: [Int32] = [-1, -1]
        try Posix.retrying(.pipe) { ivs_pipe_cloexec(&ends) }
        let reader = OwnedFD(taking: ends[0])
        let writer = OwnedFD(taking: ends[1])
        let pid = fork()
        if pid < 0 { throw SystemError(.fork) }
        if pid > 0 {
            writer.close()
            var byte: UInt8 = 0
            var count: Int
            repeat { count = read(reader.rawValue, &byte, 1) } while count < 0 && errno == EINTR
            if count == 1 { _exit(0) }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let exited = status & 0x7f == 0
            _exit(exited ? (status >> 8) & 0xff : 128 + status & 0x7f)
        }
        reader.close()
        _ = setsid()
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if null >= 0 {
            _ = dup2(null, 0)
            _ = Glibc.close(null)
        }
        return Readiness(writer)
    }

    /// The child's end: tells the waiting parent that start-up succeeded.
    public final class Readiness {
        private let fd: OwnedFD
        init(_ fd: OwnedFD) { self.fd = fd }

        public func ready() {
            guard fd.isOpen else { return }
            var byte: UInt8 = 1
            _ = write(fd.rawValue, &byte, 1)
            fd.close()
        }
    }
}

/// A pid file: "<pid>\n", removed at exit only while it still names us.
public final class PidFile {
    public let path: String
    private var file: CreatedFile?

    public init(path: String) throws {
        self.path = path
        let raw = try Posix.retrying(.open, "write pid file", path) {
            open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        }
        let fd = OwnedFD(taking: raw)
        let text = Array("\(getpid())\n".utf8)
        guard write(fd.rawValue, text, text.count) == text.count else { throw SystemError(.write, "write pid file", path) }
        file = try CreatedFile(path: path)
    }

    public func remove() {
        file?.remove()
        file = nil
    }

    deinit { remove() }
}
