import EventLoop
import Glibc
import LinuxSystem

/// A listening UNIX socket, watched through the readiness set like every
/// other socket. Accepts in batches and hands each new connection
/// (non-blocking, close-on-exec) to `onAccept`.
package final class Listener: ReadinessTarget {
    package let path: String
    package let file: CreatedFile
    private let fd: OwnedFD
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

    /// Listens on `path`, a new socket file with `mode` and `group`.
    package convenience init(readiness: ReadinessSet, path: String, mode: UInt32, group: UInt32?,
                     onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        let fd = try UnixSocket.listen(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        let file: CreatedFile
        do {
            file = try CreatedFile(path: path)
        } catch {
            _ = unlink(path)
            throw error
        }
        try self.init(readiness: readiness, listening: fd, path: path, file: file, onAccept: onAccept, onError: onError)
    }

    /// Goes on with a socket a previous server process of this VM listened
    /// on (handed back by the service manager); its file is still at `path`
    /// and gets today's `mode` and `group`.
    package convenience init(readiness: ReadinessSet, adopting fd: OwnedFD, path: String, mode: UInt32, group: UInt32?,
                     onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        _ = fcntl(fd.rawValue, F_SETFL, fcntl(fd.rawValue, F_GETFL) | O_NONBLOCK)
        try UnixSocket.setFileAccess(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        try self.init(readiness: readiness, listening: fd, path: path, file: try CreatedFile(path: path), onAccept: onAccept, onError: onError)
    }

    /// Watches a socket that already listens at `path` (its file `file`).
    package init(readiness: ReadinessSet, listening fd: OwnedFD, path: String, file: CreatedFile,
                 onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        self.path = path
        self.onAccept = onAccept
        self.onError = onError
        self.fd = fd
        self.file = file
        self.readiness = readiness
        token = readiness.register(fd: fd.rawValue, target: self)
        do {
            try readiness.watch(token: token, writable: false, add: true)
        } catch {
            readiness.forget(token: token)
            file.remove()
            throw error
        }
        reserve = Self.openReserve()
    }

    package func close() {
        guard fd.isOpen else { return }
        readiness.forget(token: token)
        fd.close()
    }

    /// Readable: connections wait (or a pending error, which accept returns).
    package func ready(_ readiness: Readiness) {
        guard fd.isOpen else { return }
        acceptPending()
    }

    /// The listening socket's fd, for the service manager's store.
    package var rawFD: Int32 { fd.rawValue }

    /// Clears the way for a socket at `path`: a socket file nobody listens
    /// on (left by a server that died) is removed; a live listener or any
    /// other kind of file is an error. True when something was removed.
    /// Call it only while holding the instance lock.
    package static func removeLeftover(path: String) throws -> Bool {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return false
        case .staleSocket:
            try Posix.retrying(.unlink, "remove leftover socket", path) { unlink(path) }
            return true
        case .listeningSocket:
            throw StartupError(path: path, reason: "another process is listening on this socket; nothing was changed")
        case let other:
            throw StartupError(path: path, reason: "exists and is \(other.kindDescription), not a socket")
        }
    }

    private func acceptPending() {
        for _ in 0..<Self.acceptBatch {
            do {
                switch try UnixSocket.accept(fd) {
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
        if case let .accepted(connection)? = try? UnixSocket.accept(fd) { connection.close() }
        reserve = Self.openReserve()
    }

    private static func openReserve() -> OwnedFD? {
        let raw = open("/dev/null", O_RDONLY | O_CLOEXEC)
        return raw >= 0 ? OwnedFD(taking: raw) : nil
    }
}
