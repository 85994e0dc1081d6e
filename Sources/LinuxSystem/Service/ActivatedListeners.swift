/// The listening sockets a systemd socket unit handed in (socket
/// activation), told apart by the path each is bound to, not by their
/// order or name (FileDescriptorName= names every fd of a unit alike).
/// Any fd whose name is not one of `ownNames`' prefixes and that listens
/// on a UNIX socket path is one; other fds of foreign names are closed.
public struct ActivatedListeners {
    public private(set) var byPath: [String: (fd: OwnedFD, name: String)] = [:]
    /// Handed fds of foreign names that are no listening socket (closed).
    public private(set) var ignored: [String] = []

    public init() {}

    /// Takes the activated listeners out of `handed` (fds by name), leaving
    /// the fds named with `ownPrefix` (the server's own hand-over; nil: it
    /// has none).
    public static func take(from handed: inout [String: [OwnedFD]], ownPrefix: String?) -> ActivatedListeners {
        var listeners = ActivatedListeners()
        for (name, fds) in handed where !(ownPrefix.map(name.hasPrefix) ?? false) {
            handed[name] = nil
            for fd in fds {
                if let path = UnixSocket.listeningPath(fd), listeners.byPath[path] == nil {
                    listeners.byPath[path] = (fd, name)
                } else {
                    listeners.ignored.append(name)
                    fd.close()
                }
            }
        }
        return listeners
    }

    /// The listener bound to `path`, taken out.
    public mutating func take(path: String) -> (fd: OwnedFD, name: String)? {
        byPath.removeValue(forKey: path)
    }

    /// Closes the rest (bound to paths nobody asked for); their paths.
    public mutating func closeRest() -> [String] {
        let paths = byPath.keys.sorted()
        for (_, listener) in byPath { listener.fd.close() }
        byPath = [:]
        return paths
    }
}
