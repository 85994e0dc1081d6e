import Descriptors
import Glibc

/// A listening UNIX socket watched by the loop. Accepts in batches and hands
/// each new connection (non-blocking, close-on-exec) to `onAccept`.
final class Listener {
    let path: String
    let file: CreatedFile
    private let fd: OwnedFD
    private var poll: PollHandle!
    private let onAccept: (OwnedFD) -> Void
    private let onError: (SystemError) -> Void
    /// A spare descriptor to give up when the process runs out, so a pending
    /// connection can still be accepted and closed instead of spinning on a
    /// listener that stays readable.
    private var reserve: OwnedFD?

    /// At most this many accepts per wakeup, so one busy socket cannot starve
    /// the other or the connections already open.
    static let acceptBatch = 64

    /// Listens on `path`, a new socket file with `mode` and `group`.
    convenience init(loop: EventLoop, path: String, mode: UInt32, group: UInt32?,
                     onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        let fd = try UnixSocket.listen(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        let file: CreatedFile
        do {
            file = try CreatedFile(path: path)
        } catch {
            _ = unlink(path)
            throw error
        }
        try self.init(loop: loop, listening: fd, path: path, file: file, onAccept: onAccept, onError: onError)
    }

    /// Goes on with a socket a previous server process of this VM listened
    /// on (handed back by the service manager); its file is still at `path`
    /// and gets today's `mode` and `group`.
    convenience init(loop: EventLoop, adopting fd: OwnedFD, path: String, mode: UInt32, group: UInt32?,
                     onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        _ = fcntl(fd.rawValue, F_SETFL, fcntl(fd.rawValue, F_GETFL) | O_NONBLOCK)
        try UnixSocket.setFileAccess(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        try self.init(loop: loop, listening: fd, path: path, file: try CreatedFile(path: path), onAccept: onAccept, onError: onError)
        adopted = true
    }

    /// Handed back rather than made by this process.
    private(set) var adopted = false

    /// Watches a socket that already listens at `path` (its file `file`).
    init(loop: EventLoop, listening fd: OwnedFD, path: String, file: CreatedFile,
                 onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        self.path = path
        self.onAccept = onAccept
        self.onError = onError
        self.fd = fd
        self.file = file
        do {
            poll = try PollHandle(loop: loop, fd: fd.rawValue) { [unowned self] _, _ in self.acceptPending() }
        } catch {
            file.remove()
            throw error
        }
        reserve = Self.openReserve()
        poll.watch(readable: true, writable: false)
    }

    func close() {
        poll.close()
        fd.close()
    }

    /// The listening socket's fd, for the service manager's store.
    var rawFD: Int32 { fd.rawValue }

    /// Clears the way for a socket at `path`: a socket file nobody listens
    /// on (left by a server that died) is removed; a live listener or any
    /// other kind of file is an error. True when something was removed.
    /// Call it only while holding the instance lock.
    static func removeLeftover(path: String) throws -> Bool {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return false
        case .staleSocket:
            try Posix.retrying("remove leftover socket", path) { unlink(path) }
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
                if error.errno == EMFILE || error.errno == ENFILE { shedOneConnection() }
                onError(error)
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
