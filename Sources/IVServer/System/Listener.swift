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

    init(loop: EventLoop, path: String, mode: UInt32, group: UInt32?,
         onAccept: @escaping (OwnedFD) -> Void, onError: @escaping (SystemError) -> Void) throws {
        self.path = path
        self.onAccept = onAccept
        self.onError = onError
        fd = try UnixSocket.listen(path: path, mode: mode_t(mode), group: group.map { gid_t($0) })
        do {
            file = try CreatedFile(path: path)
        } catch {
            _ = unlink(path)
            throw error
        }
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

/// Reads a whole (small) file, naming the path in any error.
enum FileContents {
    static let maximumSize = 16 << 20

    static func read(path: String) throws(SystemError) -> [UInt8] {
        let fd = OwnedFD(taking: try Posix.retrying("open", path) { open(path, O_RDONLY | O_CLOEXEC) })
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = try Posix.retrying("read", path) { () -> Int in
                chunk.withUnsafeMutableBytes { Glibc.read(fd.rawValue, $0.baseAddress, $0.count) }
            }
            if count == 0 { return contents }
            contents += chunk[..<count]
            if contents.count > maximumSize { throw SystemError("read", "\(path) (larger than 16 MiB)", errno: EFBIG) }
        }
    }
}

/// Facts about processes, from /proc.
enum ProcessTable {
    /// Marks every descriptor above stderr close-on-exec, so a child gets
    /// only its standard streams, whatever our parent let us inherit.
    static func closeInheritedDescriptorsOnExec() {
        guard let directory = opendir("/proc/self/fd") else { return }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// The arguments of process `pid`, if /proc lets us read them.
    static func commandLine(of pid: Int32) -> [String]? {
        guard pid > 0, let bytes = try? FileContents.read(path: "/proc/\(pid)/cmdline"), !bytes.isEmpty else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }
}

extension LayoutLoader {
    /// Reads and plans the layout at `path`. A file that cannot be read is
    /// reported as a layout problem naming the path and the cause.
    public static func load(path: String) throws(LayoutError) -> LayoutPlan {
        let contents: [UInt8]
        do {
            contents = try FileContents.read(path: path)
        } catch {
            throw LayoutError(source: path, problems: [LayoutProblem(subject: nil, message: "cannot read \(path): \(error.errnoText)")])
        }
        return try load(json: contents, source: path)
    }
}

extension VMConfig {
    /// Reads and checks a VM configuration file.
    public static func load(path: String) throws(LayoutError) -> VMConfig {
        let contents: [UInt8]
        do {
            contents = try FileContents.read(path: path)
        } catch {
            throw LayoutError(source: path, problems: [LayoutProblem(subject: nil, message: "cannot read \(path): \(error.errnoText)")],
                              kind: "VM configuration")
        }
        return try parse(json: contents, source: path)
    }
}

/// This process's environment as "NAME=value" entries.
public enum ProcessEnvironment {
    public static var current: [String] {
        var entries: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(String(cString: entry))
            pointer += 1
        }
        return entries
    }
}
