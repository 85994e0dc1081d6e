import EventLoop
import WireFormat
import LinuxSystem

/// What the server reports as it runs. The executable decides how these are
/// logged; tests can watch them directly.
public enum ServerEvent: CustomStringConvertible, Sendable {
    public enum Severity: Comparable, CaseIterable, Sendable {
        /// Bytes in and out.
        case trace
        /// Each protocol step of each connection, checks, timers.
        case debug
        case info, warning, error

        /// 0 for trace up to 4 for error.
        var rank: Int {
            switch self {
            case .trace: return 0
            case .debug: return 1
            case .info: return 2
            case .warning: return 3
            case .error: return 4
            }
        }

        /// syslog(3)'s priority, for the journal.
        var syslogPriority: Int {
            switch self {
            case .trace, .debug: return 7
            case .info: return 6
            case .warning: return 4
            case .error: return 3
            }
        }

        /// As the log and --log-level name it.
        public var name: String {
            switch self {
            case .trace: return "trace"
            case .debug: return "debug"
            case .info: return "info"
            case .warning: return "warning"
            case .error: return "error"
            }
        }
    }

    indirect case ready(ServerConfiguration)
    /// A new VM: its handshake is out; `reset` is what its region's
    /// signalling state held before it was made fresh (nil: it could not be).
    case vmConnected(peer: PeerCredentials?, reset: [SignallingReset.Found]?)
    /// The new VM's signalling state could not be reset.
    case signallingResetFailed(peer: PeerCredentials?, error: String)
    case vmDisconnected(peer: PeerCredentials?, reason: String)
    case vmRefused(peer: PeerCredentials?, current: PeerCredentials?)
    /// A peer on the QEMU socket was gone before its handshake went out:
    /// it never was the VM.
    case vmLeftBeforeHandshake(peer: PeerCredentials?, reason: String)
    /// The VM's connection, handed back after a restart, is served on.
    case vmResumed(peer: PeerCredentials?)
    /// Start-up took over what a previous server process of this VM left
    /// in the service manager's store, instead of creating anything.
    case resumed(sharedMemoryInode: UInt64, eventFDs: Int, listeners: Int, vm: PeerCredentials?)
    /// The service manager did not take an fd for its store.
    case storeFailed(name: String)
    /// One line of the state dump (SIGUSR1).
    case state(String)
    /// A step of a connection's protocol, a check, a timer (debug).
    case detail(String)
    /// Bytes received or sent (trace).
    case bytes(peer: PeerCredentials?, direction: String, bytes: [UInt8])
    /// After a re-exec under `launch`: the VM started before is watched on.
    case vmWatched(pid: Int32)
    /// SIGUSR2: the server execs its binary, handing over its fds.
    case reexecuting
    /// The re-exec did not happen; the server goes on as it was.
    case reexecFailed(reason: String)
    /// QEMU's command line gives its device `vectors` interrupt vectors,
    /// not one per region.
    case vmVectorMismatch(peer: PeerCredentials?, vectors: Int, regions: Int, deadRegions: [String])
    case clientServed(region: String, index: Int, peer: PeerCredentials?)
    case clientRefused(reason: String, peer: PeerCredentials?)
    case acceptFailed(socket: String, error: String)
    /// A file a dead server left behind was removed before start-up.
    case leftoverRemoved(path: String, what: String)
    /// SO_PEERCRED says this peer may not use the socket.
    case peerRefused(socket: String, peer: PeerCredentials?)
    /// Process `pid` (of `uid`) is over its share of pending handshakes
    /// (`cap` was full): its oldest pending connections are closed to make
    /// room for newcomers. Logged once until it holds none.
    case pendingShareExceeded(pid: Int32, uid: UInt32, cap: PendingShares.Cap, waiting: Bool, limits: PendingShares.Limits)
    /// Process `pid` holds no pending handshake any more; `closed` of its
    /// connections were held or closed meanwhile.
    case pendingShareCleared(pid: Int32, served: Int, held: Int, closed: Int)
    /// `handingOver`: the files stay, the service manager keeps the fds.
    case stopping(signal: Int32, handingOver: Bool)
    /// `ivserver launch` started the VM.
    case vmLaunched(pid: Int32, command: [String])
    /// A stop signal was passed on to the launched VM.
    case vmSignalled(pid: Int32, signal: Int32, timeoutMilliseconds: UInt64)
    /// The launched VM did not exit in time and was killed.
    case vmKilled(pid: Int32)
    /// The launched VM ended; the server stops with it.
    case vmExited(pid: Int32, termination: Termination)

    // The multi-peer mode (PeerServer).
    indirect case peerServerReady(PeerServerConfiguration, size: UInt64)
    /// A POSIX shared-memory object was there and is served on, contents kept.
    case peerMemoryReused(path: String, size: UInt64, holders: [Int32])
    /// The open-file limit allows fewer peers than --max-peers.
    case peerCapacityLimited(maximumPeers: Int, capacity: Int, openFileLimit: Int, vectors: Int)
    case peerJoined(id: UInt16, peer: PeerCredentials?, peers: Int)
    /// `announced`: the others were told (it had joined).
    case peerLeft(id: UInt16, peer: PeerCredentials?, reason: String, announced: Bool, peers: Int)
    /// Turned away before it got an ID (sent version -1).
    case peerRejected(peer: PeerCredentials?, reason: String)
    case peerDropped(id: UInt16, peer: PeerCredentials?, unsent: Int, limit: Int)
    case peerVectorMismatch(id: UInt16, peer: PeerCredentials?, vectors: Int, serverVectors: Int)

    public var severity: Severity {
        switch self {
        case .detail: return .debug
        case .bytes: return .trace
        case .ready, .vmConnected, .vmDisconnected, .vmLeftBeforeHandshake, .vmResumed, .resumed, .reexecuting, .vmWatched, .state, .clientServed, .stopping, .leftoverRemoved, .pendingShareCleared,
             .vmLaunched, .vmSignalled, .vmExited, .peerServerReady, .peerJoined, .peerLeft: return .info
        case .peerMemoryReused, .peerCapacityLimited, .peerRejected, .peerDropped, .peerVectorMismatch: return .warning
        case .vmKilled: return .warning
        case .peerRefused, .pendingShareExceeded: return .warning
        case .vmRefused, .clientRefused, .vmVectorMismatch: return .warning
        case .acceptFailed, .storeFailed, .reexecFailed, .signallingResetFailed: return .error
        }
    }

    public var description: String {
        var text = LogText()
        appendMessage(to: &text)
        return text.string
    }

    /// The message, appended as bytes: the events logged once per
    /// connection are built without generic formatting or a String.
    public func appendMessage(to text: inout LogText) {
        switch self {
        case let .ready(configuration):
            let layout = configuration.layout
            text.append("ready: \(layout.regionCount) regions, shared memory \(configuration.sharedMemoryPath) "
                + "(\(layout.size) bytes, layout from \(configuration.layoutSource)); "
                + "QEMU socket \(configuration.qemuSocketPath); client socket \(configuration.clientSocketPath); "
                + "attach a VM with: \(configuration.qemuArguments.joined(separator: " "))")
        case let .vmConnected(peer, reset):
            text.append("VM connected ("); text.append(peer); text.append("); handshake sent")
            if let reset {
                text.append("; its signalling state starts clean: ")
                if reset.allSatisfy(\.isClean) {
                    text.append("nothing was left by a previous VM")
                } else {
                    text.append("reset "); text.append(SignallingReset.describe(reset))
                }
            }
        case let .signallingResetFailed(peer, error):
            text.append("could not reset the signalling state for the VM (\(describe(peer))): \(error); "
                + "what a previous VM left (a pending interrupt) may swallow its first interrupts")
        case let .vmDisconnected(peer, reason):
            text.append("VM disconnected ("); text.append(peer); text.append("): ")
            text.append(reason); text.append("; waiting for the next VM")
        case let .vmLeftBeforeHandshake(peer, reason):
            text.append("a peer ("); text.append(peer); text.append(") connected to the QEMU socket and was gone before its handshake went out (")
            text.append(reason); text.append("): it was not attached; waiting for a VM")
        case let .vmResumed(peer):
            text.append("VM still attached ("); text.append(peer); text.append("): serving it on without a new handshake")
        case let .resumed(inode, eventFDs, listeners, vm):
            text.append("resumed what the previous server process handed on: shared memory inode \(inode), \(eventFDs) eventfds, "
                + "\(listeners) listening socket(s), " + (vm.map { "the VM's connection (pid \($0.pid))" } ?? "no VM attached"))
        case let .state(line):
            text.append("state: "); text.append(line)
        case let .detail(line):
            text.append(line)
        case let .bytes(peer, direction, bytes):
            text.append(direction); text.append(" "); text.append(peer); text.append(": ")
            text.append(bytes.map { hexDigits($0, minimumWidth: 2) }.joined(separator: " "))
        case let .vmWatched(pid):
            text.append("the VM (pid \(pid)) this process started before it executed itself again runs on: watching it")
        case .reexecuting:
            text.append("SIGUSR2: executing the binary again in place, handing over the shared memory, the eventfds, "
                + "the sockets and the VM's connection")
        case let .reexecFailed(reason):
            text.append("could not execute the binary again (\(reason)); still serving as before")
        case let .storeFailed(name):
            text.append("could not put \(name) in the service manager's fd store (is FileDescriptorStoreMax= set?): "
                + "a restart now would separate the VM from its host clients")
        case let .vmRefused(peer, current):
            text.append("refused a second VM connection (\(describe(peer))): the VM of \(describe(current)) is still connected")
        case let .vmVectorMismatch(peer, vectors, regions, dead) where vectors < regions:
            text.append("QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has \(regions) regions: "
                + "regions \(vectors)...\(regions - 1) (\(dead.joined(separator: ", "))) get no interrupts either way; "
                + "sending only \(vectors) vectors so QEMU does not reject (and make blocking) the rest; start QEMU with vectors=\(regions)")
        case let .vmVectorMismatch(peer, vectors, regions, _):
            text.append("QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has only \(regions) regions: "
                + "vectors \(regions)...\(vectors - 1) will never fire; vectors=\(regions) is enough")
        case let .clientServed(region, index, peer):
            text.append("client served region '"); text.append(region)
            text.append("' (#"); text.append(index); text.append(") to "); text.append(peer)
        case let .clientRefused(reason, peer):
            text.append("client refused (\(describe(peer))): \(reason)")
        case let .vmLaunched(pid, command):
            text.append("VM started (pid \(pid)): \(command.joined(separator: " "))")
        case let .vmSignalled(pid, signal, timeout):
            text.append("passed \(signalName(signal)) on to the VM (pid \(pid)); killing it if it has not exited in \(timeout) ms")
        case let .vmKilled(pid):
            text.append("the VM (pid \(pid)) did not exit in time: killed it")
        case let .vmExited(pid, termination):
            switch termination {
            case let .exited(code): text.append("the VM (pid \(pid)) exited with status \(code): stopping")
            case let .signalled(signal): text.append("the VM (pid \(pid)) was killed by \(signalName(signal)): stopping")
            }
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
        case let .acceptFailed(socket, error):
            text.append("accept on \(socket) failed: \(error)")
        case let .peerServerReady(configuration, size):
            text.append("ready: shared memory \(configuration.memory) (\(MemorySize.describe(size))), "
                + "\(configuration.vectors) vector(s) per peer, up to \(configuration.maximumPeers) peers; socket \(configuration.socketPath); "
                + "attach a VM with: \(configuration.qemuArguments.joined(separator: " "))")
        case let .peerMemoryReused(path, size, holders):
            text.append("serving the existing shared memory \(path) (\(MemorySize.describe(size))) with its contents, as QEMU's ivshmem-server does")
            if !holders.isEmpty {
                text.append("; process(es) \(holders.map(String.init).joined(separator: ", ")) still map it "
                    + "(VMs of a server that did not stop cleanly: they keep the memory but not their interrupts)")
            }
        case let .peerCapacityLimited(maximumPeers, capacity, limit, vectors):
            text.append("the open-file limit (\(limit)) leaves room for \(capacity) peers of \(vectors + 1) fds each, "
                + "fewer than --max-peers \(maximumPeers): peers beyond \(capacity) will be refused (raise LimitNOFILE= or ulimit -n)")
        case let .peerJoined(id, peer, peers):
            text.append("peer "); text.append(Int(id)); text.append(" joined ("); text.append(peer)
            text.append("); "); text.append(peers); text.append(" peer(s) joined")
        case let .peerLeft(id, peer, reason, announced, peers):
            text.append("peer "); text.append(Int(id)); text.append(" left ("); text.append(peer); text.append("): ")
            text.append(reason)
            text.append(announced ? "; told the others" : "; it had not received its greeting, so nobody was told of it")
            text.append("; "); text.append(peers); text.append(" peer(s) joined")
        case let .peerRejected(peer, reason):
            text.append("refused a peer (\(describe(peer))): \(reason); sent it version -1")
        case let .peerDropped(id, peer, unsent, limit):
            text.append("dropped peer \(id) (\(describe(peer))): it does not read its messages (\(unsent) unsent, "
                + "more than --max-queued-messages \(limit))")
        case let .peerVectorMismatch(id, peer, vectors, serverVectors):
            text.append("peer \(id) (\(describe(peer))) is a QEMU with ivshmem-doorbell vectors=\(vectors), the server has \(serverVectors): "
                + "sending it only vectors 0...\(vectors - 1) of each peer (QEMU rejects the rest); vectors \(vectors)...\(serverVectors - 1) "
                + "of this peer never interrupt it; start it with vectors=\(serverVectors)")
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

private func describe(_ peer: PeerCredentials?) -> String {
    peer?.description ?? "unknown peer"
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case 1: return "SIGHUP"
    case 2: return "SIGINT"
    case 9: return "SIGKILL"
    case 15: return "SIGTERM"
    default: return "signal \(signal)"
    }
}
