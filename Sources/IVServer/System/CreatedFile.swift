import Glibc
import LinuxSystem

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
