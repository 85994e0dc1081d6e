import Glibc

/// What is at a path where we want to create a socket or the shared memory.
package enum ExistingPath {
    case absent
    /// A socket file nobody listens on: left by a server that died.
    case staleSocket
    case listeningSocket
    case other(mode: UInt32)

    package static func inspect(_ path: String) throws(SystemError) -> ExistingPath {
        guard let info = try Posix.linkStatus(path) else { return .absent }
        guard info.st_mode & S_IFMT == S_IFSOCK else { return .other(mode: info.st_mode) }
        do {
            // connect() to a UNIX socket never blocks: refused means no
            // listener (stale), anything else means somebody is there.
            _ = try UnixSocket.connect(path: path, nonBlocking: true)
            return .listeningSocket
        } catch {
            return error.errno == ECONNREFUSED ? .staleSocket : .listeningSocket
        }
    }

    /// Whether `path` is a socket file (lstat; no connection is made).
    package static func isSocket(_ path: String) throws(SystemError) -> Bool {
        (try Posix.linkStatus(path)).map { $0.st_mode & S_IFMT == S_IFSOCK } ?? false
    }

    package var kindDescription: String {
        guard case let .other(mode) = self else { return "a socket" }
        switch mode & S_IFMT {
        case S_IFDIR: return "a directory"
        case S_IFREG: return "a regular file"
        case S_IFLNK: return "a symbolic link"
        default: return "not a socket"
        }
    }
}
