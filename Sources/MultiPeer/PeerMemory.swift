import ServerCore
import Glibc
import LinuxSystem

/// Where the multi-peer mode's shared memory lives (QEMU's ivshmem-server
/// `-M` and `-m`).
public enum MemoryLocation: Equatable, Sendable, CustomStringConvertible {
    /// A POSIX shared-memory object, /dev/shm/NAME, as shm_open names it.
    case posixName(String)
    /// A file created in this directory and unlinked at once (only the fd
    /// lives on): for a hugetlbfs mount such as /dev/hugepages.
    case directory(String)

    public static let posixDirectory = "/dev/shm"

    /// Where the memory is made: the object's path, or the directory.
    public var place: String {
        switch self {
        case .posixName: return path ?? ""
        case let .directory(directory): return directory
        }
    }

    /// The object's path for a POSIX name ("ivshmem" or "/ivshmem").
    public var path: String? {
        guard case let .posixName(name) = self else { return nil }
        return Self.posixDirectory + "/" + name.drop { $0 == "/" }
    }

    /// Why `name` is not a usable POSIX shared-memory name, if it is not.
    public static func problem(withPosixName name: String) -> String? {
        let bare = name.drop { $0 == "/" }
        if bare.isEmpty { return "the shared-memory name is empty" }
        if bare.contains("/") { return "a POSIX shared-memory name has no '/' after its first character (for a directory, use -m)" }
        if bare == "." || bare == ".." || bare.utf8.count > 250 { return "'\(name)' is not a valid shared-memory name" }
        return nil
    }

    public var description: String {
        switch self {
        case .posixName: return path ?? ""
        case let .directory(directory): return "an unlinked file in \(directory)"
        }
    }
}

/// The multi-peer mode's memory: plain zeroed bytes with no header, what
/// QEMU's ivshmem-server makes. Thin layer: the calls, no policy beyond
/// what is needed to never lose a running VM's memory.
extension SharedMemoryFile {
    /// How the memory came to be: made now, or an existing POSIX object
    /// taken over as QEMU's server does (its contents are kept).
    enum Origin: Equatable {
        case created
        /// The object was there; `holders` are live processes that map or
        /// hold it (VMs of a server that did not stop cleanly).
        case reused(holders: [Int32])
    }

    /// Makes (or, for a POSIX name that exists, takes over) `size` bytes of
    /// shared memory at `location`. On hugetlbfs the size is rounded up to
    /// whole huge pages and every page is taken from the pool now.
    /// With `preallocate`, every page is taken from the filesystem now, or
    /// the start is refused (a memory made now is removed again).
    static func createPlain(at location: MemoryLocation, size: UInt64, mode: mode_t,
                            preallocate: Bool = false) throws -> (SharedMemoryFile, Origin) {
        switch location {
        case let .directory(directory):
            return (try createUnlinked(in: directory, size: size, mode: mode, preallocate: preallocate), .created)
        case .posixName:
            let (memory, origin) = try openPosixObject(path: location.path!, size: size, mode: mode, preallocate: preallocate)
            if preallocate, origin != .created { try memory.takePages([0..<memory.size], whole: true, path: location.path!) }
            return (memory, origin)
        }
    }

    private static func openPosixObject(path: String, size: UInt64, mode: mode_t,
                                        preallocate: Bool) throws -> (SharedMemoryFile, Origin) {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return (try create(path: path, size: size, mode: mode, preallocate: preallocate), .created)
        case let .other(fileMode) where fileMode & S_IFMT == S_IFREG:
            let fd = try Posix.openExisting(path, writable: true, "open existing shared memory")
            let holders = ProcFS.holders(ofFileAt: path)
            let current = try SharedMemoryFile.size(of: fd, path)
            if current != size {
                if let holder = holders.first {
                    throw StartupError(path: path, .resizeWouldHurtHolder(current: current, size: size, holder: ProcFS.describe(holder)))
                }
                try Posix.resize(fd, to: size, "resize existing shared memory (ftruncate)", path)
            }
            try Posix.setMode(fd, mode, "chmod shared memory", path)
            return (SharedMemoryFile(fd: fd, file: try CreatedFile(path: path), size: size), .reused(holders: holders))
        case let other:
            throw StartupError(path: path, .wrongKind(found: other.kindDescription, wanted: "a shared-memory object"))
        }
    }
}
