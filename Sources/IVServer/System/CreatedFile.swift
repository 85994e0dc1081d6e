import Glibc
import LinuxSystem

/// Which file a path names: its device and inode, as lstat gives them (a
/// symbolic link is itself, not what it points to).
public struct FileIdentity: Equatable, Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(device: UInt64, inode: UInt64) {
        self.device = device
        self.inode = inode
    }

    /// What is at `path` now; nil when nothing is.
    static func at(_ path: String) throws(SystemError) -> FileIdentity? {
        var info = stat()
        if lstat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw SystemError(.stat, nil, path)
        }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }
}

/// Identity of a file we created, so cleanup only removes that very file and
/// never one that somebody put at the same path later.
public struct CreatedFile: Equatable, Sendable {
    public var path: String
    public var identity: FileIdentity

    /// Records what `path` is now.
    init(path: String) throws(SystemError) {
        guard let identity = try FileIdentity.at(path) else { throw SystemError(.stat, nil, path, errno: ENOENT) }
        self.path = path
        self.identity = identity
    }

    /// Whether the file at the path is still the one we created.
    var isInPlace: Bool { (try? FileIdentity.at(path)) == identity }

    /// Unlinks the path if it is still the file we created.
    public func remove() {
        guard isInPlace else { return }
        _ = unlink(path)
    }
}
