import CLinux
import Glibc
import LinuxSystem

/// systemd's side of a service (sd_notify(3), sd_listen_fds(3)): when a
/// unit with Type=notify starts the server, NOTIFY_SOCKET names a datagram
/// socket for "READY=1" and for the file-descriptor store ("FDSTORE=1",
/// with the fds attached, so they outlive this process); a restarted
/// instance gets the stored fds back as LISTEN_FDS/LISTEN_FDNAMES from fd
/// 3 on. Outside a service manager every call here does nothing.
public enum ServiceManager {
    /// True when a service manager listens (NOTIFY_SOCKET is set).
    public static var isPresent: Bool { notifyAddress() != nil }

    public static func notifyReady() {
        notify("READY=1\nSTATUS=serving\nMAINPID=\(getpid())")
    }

    /// Puts each fd in the manager's store under its name, through one
    /// socket; the names that could not be sent (all of them without a
    /// manager). Whether the manager keeps them depends on its
    /// FileDescriptorStoreMax=.
    public static func store(_ items: [(name: String, fd: Int32)]) -> [String] {
        let sent = send(items.map { ("FDSTORE=1\nFDNAME=\($0.name)", [$0.fd]) })
        return zip(items, sent).filter { !$1 }.map { $0.0.name }
    }

    /// Takes the fds stored under `name` out of the manager's store.
    public static func removeStored(name: String) {
        notify("FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    /// Sends one notification; true when it went out.
    @discardableResult
    static func notify(_ text: String, fds: [Int32] = []) -> Bool {
        send([(text, fds)])[0]
    }

    /// Sends notifications in order through one socket; for each, whether
    /// it went out. The manager's queue is short (net.unix.max_dgram_qlen);
    /// while it is full this waits for room, at most `patienceMilliseconds`
    /// a message, rather than blocking the loop.
    private static func send(_ messages: [(text: String, fds: [Int32])]) -> [Bool] {
        let none = [Bool](repeating: false, count: messages.count)
        guard var address = notifyAddress() else { return none }
        let raw = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard raw >= 0 else { return none }
        let socket = OwnedFD(taking: raw)
        let length = socklen_t(MemoryLayout<sa_family_t>.size) + address.length
        let connected = withUnsafePointer(to: &address.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket.rawValue, $0, length) }
        }
        guard connected == 0 else { return none }
        return messages.map { message in
            let bytes = Array(message.text.utf8)[...]
            var waited: Int32 = 0
            while waited <= patienceMilliseconds {
                do {
                    if try UnixSocket.send(socket, bytes, fds: message.fds) != nil { return true }
                } catch {
                    return false
                }
                var entry = pollfd(fd: socket.rawValue, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, 10)
                waited += 10
            }
            return false
        }
    }

    static let patienceMilliseconds: Int32 = 1000

    private static func notifyAddress() -> (storage: sockaddr_un, length: socklen_t)? {
        guard let value = getenv("NOTIFY_SOCKET") else { return nil }
        var path = Array(String(cString: value).utf8)
        guard !path.isEmpty, path.count < ivs_sun_path_capacity() else { return nil }
        if path[0] == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path) }
        return (address, socklen_t(path.count))
    }

    /// The fds a service manager (or the server's own re-exec) handed to
    /// this process, by name, each made close-on-exec; the environment
    /// variables are removed so that no child sees them. Empty when none
    /// were handed, or they were meant for another process (LISTEN_PID).
    public static func takeHandedDescriptors() -> [String: [OwnedFD]] {
        defer {
            for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "IVSERVER_HANDOVER_PID", "IVSERVER_HANDOVER_FDS"] {
                unsetenv(name)
            }
        }
        let handed = HandedDescriptors.parse(
            ownPID: getpid(), listenPID: environment("LISTEN_PID"), count: environment("LISTEN_FDS"),
            names: environment("LISTEN_FDNAMES"))
            + HandedDescriptors.parseHandover(ownPID: getpid(), handoverPID: environment("IVSERVER_HANDOVER_PID"),
                                              fds: environment("IVSERVER_HANDOVER_FDS"))
        var named: [String: [OwnedFD]] = [:]
        for (number, name) in handed {
            _ = fcntl(number, F_SETFD, FD_CLOEXEC)
            named[name, default: []].append(OwnedFD(taking: number))
        }
        return named
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

/// sd_listen_fds_with_names(3) as a pure function, and the server's own
/// re-exec hand-over ("name=fd:name=fd", for the same pid).
enum HandedDescriptors {
    static func parseHandover(ownPID: Int32, handoverPID: String?, fds: String?) -> [(fd: Int32, name: String)] {
        guard let handoverPID, Int32(handoverPID) == ownPID, let fds, !fds.isEmpty else { return [] }
        return fds.split(separator: ":").compactMap { item in
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let fd = Int32(parts[1]), fd > 2 else { return nil }
            return (fd, String(parts[0]))
        }
    }

    /// The first handed fd: after stdin, stdout and stderr.
    static let first: Int32 = 3

    /// The fd numbers and their names; none unless LISTEN_PID is this
    /// process and LISTEN_FDS a count. A missing or short name list names
    /// the rest "unknown", as systemd does.
    static func parse(ownPID: Int32, listenPID: String?, count: String?, names: String?) -> [(fd: Int32, name: String)] {
        guard let listenPID, Int32(listenPID) == ownPID, let count, let total = Int32(count), total > 0,
              total <= 65536 - first
        else { return [] }
        let given = names.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        return (0..<total).map { index in
            (first + index, Int(index) < given.count && !given[Int(index)].isEmpty ? given[Int(index)] : "unknown")
        }
    }
}
