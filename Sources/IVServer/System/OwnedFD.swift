import Glibc

/// The one owner of a file descriptor: it is closed exactly once, by
/// `close()` or when the owner goes away. Every fd ivserver creates or
/// receives is wrapped at once, and every one is close-on-exec.
public final class OwnedFD {
    private var descriptor: Int32

    /// Takes ownership of `descriptor`.
    public init(taking descriptor: Int32) {
        precondition(descriptor >= 0, "not a file descriptor: \(descriptor)")
        self.descriptor = descriptor
    }

    deinit { close() }

    public var isOpen: Bool { descriptor >= 0 }

    /// The raw number, for system calls. Using it after close is a bug.
    public var rawValue: Int32 {
        precondition(descriptor >= 0, "file descriptor used after close")
        return descriptor
    }

    /// Closes the descriptor; later calls do nothing. Errors from close(2)
    /// are not actionable (the descriptor is gone either way on Linux).
    public func close() {
        guard descriptor >= 0 else { return }
        _ = Glibc.close(descriptor)
        descriptor = -1
    }
}

/// Identity of a file we created, so cleanup only removes that very file and
/// never one that somebody put at the same path later.
public struct CreatedFile: Equatable, Sendable {
    public var path: String
    var device: UInt64
    var inode: UInt64

    /// Records what `path` is now.
    init(path: String) throws(SystemError) {
        var info = stat()
        try Posix.retrying("stat", path) { lstat(path, &info) }
        self.path = path
        self.device = UInt64(info.st_dev)
        self.inode = UInt64(info.st_ino)
    }

    /// Unlinks the path if it is still the file we created.
    public func remove() {
        var info = stat()
        guard lstat(path, &info) == 0, UInt64(info.st_dev) == device, UInt64(info.st_ino) == inode else { return }
        _ = unlink(path)
    }
}
