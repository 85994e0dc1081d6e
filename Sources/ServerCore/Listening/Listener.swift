import EventLoop
import Glibc
import LinuxSystem

/// A listening UNIX socket and its file, made (or taken over) while a
/// server starts, before any loop exists.
package final class ListeningSocket {
    package let path: String
    package let fd: OwnedFD
    /// The socket file, removed at close while it is still this one
    /// (when the server made it: `ownsFile`).
    package let file: CreatedFile
    /// False for a socket a systemd socket unit made and handed in: the
    /// unit keeps its file (and removes it when it stops).
    package let ownsFile: Bool

    private init(path: String, fd: OwnedFD, file: CreatedFile, ownsFile: Bool = true) {
        self.path = path
        self.fd = fd
        self.file = file
        self.ownsFile = ownsFile
    }

    /// Serves on a listening socket a systemd socket unit made and handed
    /// in (socket activation): its file, mode and group are the unit's
    /// (SocketMode=, SocketGroup=), so neither is touched, now or at close.
    package static func activated(_ fd: OwnedFD, path: String) throws(SystemError) -> ListeningSocket {
        try Posix.setNonBlocking(fd)
        return ListeningSocket(path: path, fd: fd, file: try CreatedFile(path: path), ownsFile: false)
    }

    /// Listens on `path`, a new socket file with exactly `mode` and `group`.
    package static func make(path: String, mode: UInt32, group: UInt32?) throws -> ListeningSocket {
        let fd: OwnedFD
        do {
            fd = try UnixSocket.listen(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        } catch {
            if error.call == .bind, error.errno == ENOENT, let missing = StartupError.missingDirectory(of: path) { throw missing }
            throw error
        }
        do {
            return ListeningSocket(path: path, fd: fd, file: try CreatedFile(path: path))
        } catch {
            // Ours, just made: nothing else can be at the path.
            _ = try? Posix.removeName(path)
            throw error
        }
    }

    /// Goes on with a socket a previous server process listened on (handed
    /// over); its file is still at `path` and gets today's `mode` and `group`.
    package static func takeOver(_ fd: OwnedFD, path: String, mode: UInt32, group: UInt32?) throws(SystemError) -> ListeningSocket {
        try Posix.setNonBlocking(fd)
        try UnixSocket.setFileAccess(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        return ListeningSocket(path: path, fd: fd, file: try CreatedFile(path: path))
    }

    /// Clears the way for a socket at `path`: a socket file nobody listens
    /// on (left by a server that died) is removed; a live listener or any
    /// other kind of file is an error. True when something was removed.
    /// Call it only while holding the instance lock.
    package static func removeLeftover(path: String) throws -> Bool {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return false
        case .staleSocket:
            try Posix.removeName(path, "remove leftover socket")
            return true
        case .listeningSocket:
            throw StartupError(path: path, .socketInUse)
        case let other:
            throw StartupError(path: path, .wrongKind(found: other.kindDescription, wanted: "a socket"))
        }
    }
}

/// A listening socket watched through the readiness set like every other
/// socket while the server serves. Accepts in batches and hands each new
/// connection (non-blocking, close-on-exec) to `onAccept`.
package final class Listener: ReadinessTarget {
    package let socket: ListeningSocket
    private let readiness: ReadinessSet
    private var token: UInt64 = 0
    private let onAccept: (OwnedFD) -> Void
    private let onError: (SystemError) -> Void
    /// A spare descriptor to give up when the process runs out, so a pending
    /// connection can still be accepted and closed instead of spinning on a
    /// listener that stays readable.
    private var reserve: OwnedFD?

    /// At most this many accepts per wakeup, so one busy socket cannot starve
    /// the other or the connections already open.
    package static let acceptBatch = 64

    package init(_ socket: ListeningSocket, readiness: ReadinessSet,
                 onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws(SystemError) {
        self.socket = socket
        self.onAccept = onAccept
        self.onError = onError
        self.readiness = readiness
        token = readiness.register(fd: socket.fd.rawValue, target: self)
        do {
            try readiness.watch(token: token, writable: false, add: true)
        } catch {
            readiness.forget(token: token)
            throw error
        }
        reserve = Self.openReserve()
    }

    package var path: String { socket.path }

    /// Stops accepting and closes the listening socket (its file stays
    /// until the server's close, or for the next server process).
    package func close() {
        guard socket.fd.isOpen else { return }
        readiness.forget(token: token)
        socket.fd.close()
        reserve?.close()
    }

    /// Readable: connections wait (or a pending error, which accept returns).
    package func ready(_ readiness: Readiness) {
        guard socket.fd.isOpen else { return }
        for _ in 0..<Self.acceptBatch {
            do {
                switch try UnixSocket.accept(socket.fd) {
                case let .accepted(connection): onAccept(connection)
                case .wouldBlock: return
                case .retry: continue
                }
            } catch {
                // Logged before the shed connection is closed, so whoever
                // sees that close finds the reason already reported.
                onError(error)
                if error.errno == EMFILE || error.errno == ENFILE { shedOneConnection() }
                return
            }
        }
    }

    private func shedOneConnection() {
        reserve?.close()
        if case let .accepted(connection)? = try? UnixSocket.accept(socket.fd) { connection.close() }
        reserve = Self.openReserve()
    }

    private static func openReserve() -> OwnedFD? {
        try? Posix.openExisting("/dev/null", writable: false)
    }
}
