import CLinux
import Glibc

/// systemd's side of a service (sd_notify(3), sd_listen_fds(3)): when a
/// unit with Type=notify starts the server, NOTIFY_SOCKET names a datagram
/// socket for "READY=1" and for the file-descriptor store ("FDSTORE=1",
/// with the fds attached, so they outlive this process); a restarted
/// instance gets the stored fds back as LISTEN_FDS/LISTEN_FDNAMES from fd
/// 3 on. Outside a service manager every call here does nothing.
public enum ServiceManager {
    /// True when a service manager listens (NOTIFY_SOCKET is set).
    public static var isPresent: Bool { notifySocketPath != nil }

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
    package static func notify(_ text: String, fds: [Int32] = []) -> Bool {
        send([(text, fds)])[0]
    }

    /// Sends notifications in order through one socket; for each, whether
    /// it went out. The manager's queue is short (net.unix.max_dgram_qlen);
    /// while it is full this waits for room, at most `patience` a message,
    /// rather than blocking the loop.
    private static func send(_ messages: [(text: String, fds: [Int32])]) -> [Bool] {
        let none = [Bool](repeating: false, count: messages.count)
        guard let path = notifySocketPath, let socket = try? UnixSocket.connectDatagram(path: path) else { return none }
        return messages.map { message in
            let bytes = Array(message.text.utf8)[...]
            let deadline = ContinuousClock.now + patience
            do {
                while true {
                    if try UnixSocket.send(socket, bytes, fds: message.fds) != nil { return true }
                    let left = deadline - ContinuousClock.now
                    guard left > .zero, try UnixSocket.waitUntilWritable(socket, timeout: left) else { return false }
                }
            } catch {
                return false
            }
        }
    }

    package static let patience: Duration = .seconds(1)

    /// NOTIFY_SOCKET: a path, or "@name" in the abstract namespace.
    private static var notifySocketPath: String? {
        guard let value = getenv("NOTIFY_SOCKET") else { return nil }
        let path = String(cString: value)
        return path.isEmpty ? nil : path
    }

    /// The fds a service manager handed to this process (LISTEN_FDS), by
    /// name, each made close-on-exec; the variables are removed so that no
    /// child sees them. Empty when none were handed, or they were meant
    /// for another process (LISTEN_PID).
    public static func takeHandedDescriptors() -> [String: [OwnedFD]] {
        defer { for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { unsetenv(name) } }
        let handed = HandedDescriptors.parse(
            ownPID: getpid(), listenPID: environment("LISTEN_PID"), count: environment("LISTEN_FDS"),
            names: environment("LISTEN_FDNAMES"))
        return HandedDescriptors.take(handed)
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

/// sd_listen_fds_with_names(3) as a pure function, and the taking of
/// handed fd numbers (LISTEN_FDS' or a re-exec's).
package enum HandedDescriptors {
    /// The handed fds by name, owned and close-on-exec; a number that is
    /// not open (a miscounted LISTEN_FDS) is no fd of ours and is left out.
    package static func take(_ handed: [(fd: Int32, name: String)]) -> [String: [OwnedFD]] {
        var named: [String: [OwnedFD]] = [:]
        for (number, name) in handed where Posix.setCloseOnExecIfOpen(number) {
            named[name, default: []].append(OwnedFD(taking: number))
        }
        return named
    }

    /// The first handed fd: after stdin, stdout and stderr.
    package static let first: Int32 = 3

    /// The fd numbers and their names; none unless LISTEN_PID is this
    /// process and LISTEN_FDS a count. A missing or short name list names
    /// the rest "unknown", as systemd does.
    package static func parse(ownPID: Int32, listenPID: String?, count: String?, names: String?) -> [(fd: Int32, name: String)] {
        guard let listenPID, Int32(listenPID) == ownPID, let count, let total = Int32(count), total > 0,
              total <= 65536 - first
        else { return [] }
        let given = names.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) } ?? []
        return (0..<total).map { index in
            (first + index, Int(index) < given.count && !given[Int(index)].isEmpty ? given[Int(index)] : "unknown")
        }
    }
}
