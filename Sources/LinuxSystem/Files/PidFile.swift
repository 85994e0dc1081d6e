import Glibc

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
        file = try CreatedFile(path: path)
        let text = Array("\(getpid())\n".utf8)
        let written = try Posix.retrying(.write, "write pid file", path) { write(fd.rawValue, text, text.count) }
        guard written == text.count else { throw SystemError(.write, "write pid file", path, errno: EIO) }
    }

    public func remove() {
        file?.remove()
        file = nil
    }

    deinit { remove() }
}
