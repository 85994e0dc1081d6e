import Glibc

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
    package static func at(_ path: String) throws(SystemError) -> FileIdentity? {
        (try Posix.linkStatus(path)).map { FileIdentity(device: UInt64($0.st_dev), inode: UInt64($0.st_ino)) }
    }

    /// The file `fd` is open on.
    package init(of fd: OwnedFD) throws(SystemError) {
        let info = try Posix.status(fd)
        self.init(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }
}

/// Identity of a file we created, so cleanup only removes that very file and
/// never one that somebody put at the same path later.
public struct CreatedFile: Equatable, Sendable {
    public var path: String
    public var identity: FileIdentity

    /// Records what `path` is now.
    package init(path: String) throws(SystemError) {
        guard let identity = try FileIdentity.at(path) else { throw SystemError(.lstat, "stat", path, errno: ENOENT) }
        self.path = path
        self.identity = identity
    }

    /// Whether the file at the path is still the one we created.
    package var isInPlace: Bool { (try? FileIdentity.at(path)) == identity }

    /// Unlinks the path if it is still the file we created.
    public func remove() {
        guard isInPlace else { return }
        // Gone meanwhile is as good.
        _ = try? Posix.retrying(.unlink, "remove", path) { unlink(path) }
    }
}
