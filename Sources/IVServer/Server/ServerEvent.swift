/// What the server reports as it runs. The executable decides how these are
/// logged; tests can watch them directly.
public enum ServerEvent: CustomStringConvertible, Sendable {
    public enum Severity: Sendable { case debug, info, warning, error }

    case ready(ServerConfiguration)
    case vmConnected(peer: PeerCredentials?)
    case vmDisconnected(peer: PeerCredentials?, reason: String)
    case vmRefused(peer: PeerCredentials?, current: PeerCredentials?)
    case clientServed(region: String, index: Int, peer: PeerCredentials?)
    case clientRefused(reason: String, peer: PeerCredentials?)
    case acceptFailed(socket: String, error: String)
    case stopping(signal: Int32)

    public var severity: Severity {
        switch self {
        case .ready, .vmConnected, .vmDisconnected, .clientServed, .stopping: return .info
        case .vmRefused, .clientRefused: return .warning
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
            return "VM connected (\(describe(peer))); handshake sent"
        case let .vmDisconnected(peer, reason):
            return "VM disconnected (\(describe(peer))): \(reason); waiting for the next VM"
        case let .vmRefused(peer, current):
            return "refused a second VM connection (\(describe(peer))): the VM of \(describe(current)) is still connected"
        case let .clientServed(region, index, peer):
            return "client served region '\(region)' (#\(index)) to \(describe(peer))"
        case let .clientRefused(reason, peer):
            return "client refused (\(describe(peer))): \(reason)"
        case let .acceptFailed(socket, error):
            return "accept on \(socket) failed: \(error)"
        case let .stopping(signal):
            return "signal \(signalName(signal)) received: stopping, removing the shared memory and sockets"
        }
    }
}

private func describe(_ peer: PeerCredentials?) -> String {
    peer.map(String.init(describing:)) ?? "unknown peer"
}

func signalName(_ signal: Int32) -> String {
    switch signal {
    case 1: return "SIGHUP"
    case 2: return "SIGINT"
    case 15: return "SIGTERM"
    default: return "signal \(signal)"
    }
}
