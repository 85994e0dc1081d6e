/// What the server reports as it runs. The executable decides how these are
/// logged; tests can watch them directly.
public enum ServerEvent: CustomStringConvertible, Sendable {
    public enum Severity: Sendable { case debug, info, warning, error }

    case ready(ServerConfiguration)
    case vmConnected(peer: PeerCredentials?)
    case vmDisconnected(peer: PeerCredentials?, reason: String)
    case vmRefused(peer: PeerCredentials?, current: PeerCredentials?)
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
    /// The pending-handshake cap was hit; further connections are closed at once.
    case pendingLimitReached(limit: Int)
    /// Back under the cap, after closing `refused` connections at once.
    case pendingLimitCleared(refused: Int)
    case stopping(signal: Int32)
    /// `ivserver launch` started the VM.
    case vmLaunched(pid: Int32, command: [String])
    /// A stop signal was passed on to the launched VM.
    case vmSignalled(pid: Int32, signal: Int32, timeoutMilliseconds: UInt64)
    /// The launched VM did not exit in time and was killed.
    case vmKilled(pid: Int32)
    /// The launched VM ended; the server stops with it.
    case vmExited(pid: Int32, termination: ChildProcess.Termination)

    public var severity: Severity {
        switch self {
        case .ready, .vmConnected, .vmDisconnected, .clientServed, .stopping, .leftoverRemoved, .pendingLimitCleared,
             .vmLaunched, .vmSignalled, .vmExited: return .info
        case .vmKilled: return .warning
        case .peerRefused, .pendingLimitReached: return .warning
        case .vmRefused, .clientRefused, .vmVectorMismatch: return .warning
        case .acceptFailed: return .error
        }
    }

    public var description: String {
        switch self {
        case let .ready(configuration):
            let layout = configuration.layout
            return "ready: \(layout.regionCount) regions, shared memory \(configuration.sharedMemoryPath) "
                + "(\(layout.size) bytes, layout from \(configuration.layoutSource)); "
                + "QEMU socket \(configuration.qemuSocketPath); client socket \(configuration.clientSocketPath); "
                + "attach a VM with: \(configuration.qemuArguments.joined(separator: " "))"
        case let .vmConnected(peer):
            // once per VM connection, like clientServed: no generic formatting
            var text = LogText()
            text.append("VM connected ("); text.append(peer); text.append("); handshake sent")
            return text.string
        case let .vmDisconnected(peer, reason):
            var text = LogText()
            text.append("VM disconnected ("); text.append(peer); text.append("): ")
            text.append(reason); text.append("; waiting for the next VM")
            return text.string
        case let .vmRefused(peer, current):
            return "refused a second VM connection (\(describe(peer))): the VM of \(describe(current)) is still connected"
        case let .vmVectorMismatch(peer, vectors, regions, dead) where vectors < regions:
            return "QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has \(regions) regions: "
                + "regions \(vectors)...\(regions - 1) (\(dead.joined(separator: ", "))) get no interrupts either way; "
                + "sending only \(vectors) vectors so QEMU does not reject (and make blocking) the rest; start QEMU with vectors=\(regions)"
        case let .vmVectorMismatch(peer, vectors, regions, _):
            return "QEMU (\(describe(peer))) has ivshmem-doorbell vectors=\(vectors) but the layout has only \(regions) regions: "
                + "vectors \(regions)...\(vectors - 1) will never fire; vectors=\(regions) is enough"
        case let .clientServed(region, index, peer):
            // once per host client: built without generic formatting
            var text = LogText()
            text.append("client served region '"); text.append(region)
            text.append("' (#"); text.append(index); text.append(") to "); text.append(peer)
            return text.string
        case let .clientRefused(reason, peer):
            return "client refused (\(describe(peer))): \(reason)"
        case let .vmLaunched(pid, command):
            return "VM started (pid \(pid)): \(command.joined(separator: " "))"
        case let .vmSignalled(pid, signal, timeout):
            return "passed \(signalName(signal)) on to the VM (pid \(pid)); killing it if it has not exited in \(timeout) ms"
        case let .vmKilled(pid):
            return "the VM (pid \(pid)) did not exit in time: killed it"
        case let .vmExited(pid, termination):
            switch termination {
            case let .exited(code): return "the VM (pid \(pid)) exited with status \(code): stopping"
            case let .signalled(signal): return "the VM (pid \(pid)) was killed by \(signalName(signal)): stopping"
            }
        case let .leftoverRemoved(path, what):
            return "removed \(what) left by an ivserver that did not stop cleanly: \(path)"
        case let .peerRefused(socket, peer):
            return "refused \(describe(peer)) on \(socket): not root, not the server's user, and not allowed by --allow-uid/--allow-gid"
        case let .pendingLimitReached(limit):
            return "\(limit) host clients are mid-handshake (--max-pending): closing new client connections at once until some finish"
        case let .pendingLimitCleared(refused):
            return "back under --max-pending; \(refused) client connection(s) were closed at once meanwhile"
        case let .acceptFailed(socket, error):
            return "accept on \(socket) failed: \(error)"
        case let .stopping(signal):
            return "signal \(signalName(signal)) received: stopping, removing the shared memory and sockets"
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
