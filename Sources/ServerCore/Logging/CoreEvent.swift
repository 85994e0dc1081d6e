import LinuxSystem
import WireFormat

/// What any server reports of the parts they share: accepting, admission,
/// leftovers, the state dump, stopping, and each step at debug and trace.
public enum CoreEvent: LogEvent {
    /// One line of the state dump (SIGUSR1).
    case state(String)
    /// A step of a connection's protocol, a check, a timer (debug).
    case detail(String)
    /// Bytes received or sent (trace).
    case bytes(peer: PeerCredentials?, direction: String, bytes: [UInt8])
    case acceptFailed(socket: String, error: String)
    /// A file a dead server left behind was removed before start-up.
    case leftoverRemoved(path: String, what: String)
    /// SO_PEERCRED says this peer may not use the socket.
    case peerRefused(socket: String, peer: PeerCredentials?)
    /// Process `pid` (of `uid`) is over its share of pending handshakes
    /// (`cap` was full): its oldest pending connections are closed to make
    /// room for newcomers. Logged once until it holds none.
    case pendingShareExceeded(pid: Int32, uid: UInt32, cap: PendingCap, waiting: Bool, limits: PendingLimits)
    /// Process `pid` holds no pending handshake any more; `closed` of its
    /// connections were held or closed meanwhile.
    case pendingShareCleared(pid: Int32, served: Int, held: Int, closed: Int)
    /// The memory's filesystem has less room than the memory can still
    /// take (`elsewhere`: the flag that puts it on another).
    case memoryShort(memory: String, shortfall: MemoryShortfall, elsewhere: String)
    /// Pages of memory handed over by a previous server process could not
    /// be taken now (it is served on as it is).
    case memoryPagesNotTaken(reason: String)
    /// `handingOver`: the files stay, the service manager keeps the fds.
    case stopping(signal: Int32, handingOver: Bool)

    public var severity: Severity {
        switch self {
        case .bytes: return .trace
        case .detail: return .debug
        case .state, .leftoverRemoved, .pendingShareCleared, .stopping: return .info
        case .peerRefused, .pendingShareExceeded, .memoryShort, .memoryPagesNotTaken: return .warning
        case .acceptFailed: return .error
        }
    }

    public func appendMessage(to text: inout LogText) {
        switch self {
        case let .state(line):
            text.append("state: "); text.append(line)
        case let .detail(line):
            text.append(line)
        case let .bytes(peer, direction, bytes):
            text.append(direction); text.append(" "); text.append(peer); text.append(": ")
            text.append(bytes.map { hexDigits($0, minimumWidth: 2) }.joined(separator: " "))
        case let .acceptFailed(socket, error):
            text.append("accept on \(socket) failed: \(error)")
        case let .leftoverRemoved(path, what):
            text.append("removed \(what) left by an ivserver that did not stop cleanly: \(path)")
        case let .peerRefused(socket, peer):
            text.append("refused \(describe(peer)) on \(socket): not root, not the server's user, and not allowed by --allow-uid/--allow-gid")
        case let .pendingShareExceeded(pid, uid, cap, waiting, limits):
            let share: String
            switch cap {
            case .process: share = "this process holds \(waiting ? "" : "more than ")\(limits.perProcess) (--max-pending-per-process)"
            case .user: share = "user \(uid) holds \(waiting ? "" : "more than ")\(limits.perUser) (--max-pending-per-user)"
                + (waiting ? "" : " and this process the most of them")
            case .total: share = "this process holds the most"
            }
            text.append("host client process pid \(pid) uid \(uid) is over its share: \(limits.total) host clients are mid-handshake "
                + "(--max-pending) and \(share); "
                + (waiting ? "its new connections wait, without a reply, and are greeted in turn as room opens"
                    : "its oldest pending connections are closed to make room for other clients")
                + "; its refusals are counted, not logged one by one, until it has none pending")
        case let .pendingShareCleared(pid, served, held, closed):
            text.append("host client process pid \(pid) has no pending or waiting connection now; meanwhile \(served) of its connections "
                + "were served, \(held) waited for room, \(closed) were closed or refused")
        case let .memoryShort(memory, shortfall, elsewhere):
            text.append("shared memory \(memory) may not get all its pages: \(shortfall.filesystem) has \(MemorySize.both(shortfall.free)) free, "
                + "and the memory can still take \(MemorySize.both(shortfall.needed)) as the guest and host clients first touch it; "
                + "a page the filesystem cannot give then kills whoever touches it with SIGBUS (QEMU, and with it the VM, or a host client). "
                + "Start with --prealloc to take every page now (or be refused at once), give the filesystem more room "
                + "(a larger tmpfs: mount -o remount,size=…, docker run --shm-size=…), or put the memory elsewhere with \(elsewhere)")
        case let .memoryPagesNotTaken(reason):
            text.append("could not take the shared memory's pages at start (\(reason)); serving it on as it was handed over")
        case let .stopping(signal, handingOver):
            text.append(signal == 0 ? "stop requested: " : "signal \(signalName(signal)) received: ")
            if handingOver {
                text.append("stopping; the shared memory, the sockets and the VM's connection "
                    + "stay in the service manager's store for the next server process")
            } else {
                text.append("stopping, removing the shared memory and sockets")
            }
        }
    }
}
