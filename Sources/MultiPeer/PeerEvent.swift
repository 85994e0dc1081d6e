import LinuxSystem
import ServerCore

/// What the multi-peer server reports as it runs.
public enum PeerEvent: LogEvent {
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
        case .peerServerReady, .peerJoined, .peerLeft: return .info
        case .peerMemoryReused, .peerCapacityLimited, .peerRejected, .peerDropped, .peerVectorMismatch: return .warning
        }
    }

    public func appendMessage(to text: inout LogText) {
        switch self {
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
        }
    }
}
