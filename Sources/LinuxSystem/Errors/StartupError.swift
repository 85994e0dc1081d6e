import Glibc

/// Why start-up cannot go on, naming the path: one line for the operator,
/// and a `Problem` a caller or a test tells apart without reading text.
public struct StartupError: Error, Equatable, Sendable, CustomStringConvertible {
    public var path: String
    public var problem: Problem

    public init(path: String, _ problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public enum Problem: Equatable, Sendable {
        /// Something else is at the path: `found` ("a directory", ...), not `wanted`.
        case wrongKind(found: String, wanted: String)
        /// A regular file without a vSoC layout: ivserver did not make it.
        case holdsNoLayout
        /// A dead server's memory that a live process (`holder`) still holds.
        case leftoverHeld(holder: String)
        /// The directory the path is in does not exist (`path` is that directory).
        case missingDirectory(for: String)
        case notADirectory
        case noFreeName
        /// --prealloc: the filesystem (`filesystem`) has `free` bytes, `needed` more are wanted.
        case preallocationShort(filesystem: String, free: UInt64, needed: UInt64)
        /// Not even the pages the server and the signalling touch fit.
        case signallingShort(errnoText: String, filesystem: String, free: UInt64, needed: UInt64)
        /// The huge page pool is short.
        case hugePagesShort(needed: UInt64, pageSize: UInt64, free: UInt64?, total: UInt64, poolFile: String)
        /// Another server holds the instance lock.
        case lockHeld(owner: String)
        case lockKeepsChanging
        /// Another process listens on the socket.
        case socketInUse
        /// Resizing an existing multi-peer memory would pull it from under `holder`.
        case resizeWouldHurtHolder(current: UInt64, size: UInt64, holder: String)
    }

    public var reason: String {
        switch problem {
        case let .wrongKind(found, wanted): return "exists and is \(found), not \(wanted)"
        case .holdsNoLayout:
            return "exists but holds no vSoC layout, so ivserver did not make it; not replacing it (remove it or pick another --shm-path)"
        case let .leftoverHeld(holder):
            return "left by an ivserver that did not stop cleanly, and process \(holder) still holds it: a new memory would split "
                + "that VM from its host clients. Stop that VM first, or start with --replace-held-memory to replace it anyway"
        case let .missingDirectory(file):
            return "the directory does not exist, so \(file) cannot be made in it; create it first (mkdir -p \(path)) or give another path"
        case .notADirectory: return "is not a directory (-m takes a directory)"
        case .noFreeName: return "could not find a free file name"
        case let .preallocationShort(filesystem, free, needed):
            return "--prealloc: \(filesystem) has \(MemorySize.both(free)) free, and taking every page of the memory "
                + "needs \(MemorySize.both(needed)) more; give it more room (a larger tmpfs: mount -o remount,size=…), "
                + "put the memory on another filesystem, or start without --prealloc"
        case let .signallingShort(errnoText, filesystem, free, needed):
            return "\(errnoText): \(filesystem) has \(MemorySize.both(free)) free, not even the \(MemorySize.both(needed)) "
                + "of the pages the server and the signalling touch; free some room there or put the memory on another filesystem"
        case let .hugePagesShort(needed, pageSize, free, total, poolFile):
            return "needs \(needed) huge pages of \(MemorySize.describe(pageSize)) and the pool has \(free.map { "\($0) free" } ?? "fewer free") "
                + "(\(total) in all): raise it, e.g. as root: echo \(total + needed) > \(poolFile)"
        case let .lockHeld(owner): return "another ivserver (\(owner)) holds this lock and is serving these paths; nothing was changed"
        case .lockKeepsChanging: return "the lock file keeps changing under us; is another ivserver starting?"
        case .socketInUse: return "another process is listening on this socket; nothing was changed"
        case let .resizeWouldHurtHolder(current, size, holder):
            return "exists with \(current) bytes and process \(holder) maps or holds it: "
                + "resizing it to \(size) would take memory from under that VM. Stop it, or pass -l \(current)"
        }
    }

    public var description: String { "\(path): \(reason)" }
}

extension StartupError {
    /// When `path`'s directory is missing, the error that says so (the
    /// system's "No such file or directory" names the file, not what is
    /// missing); nil when the directory is there.
    public static func missingDirectory(of path: String) -> StartupError? {
        let directory = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        // Only when stat says it is not there: any other failure is told by the call that made it.
        guard case .some(.none) = try? Posix.pathStatus(directory) else { return nil }
        return StartupError(path: directory, .missingDirectory(for: path))
    }
}
