import LinuxSystem

/// The VM's QEMU on the QEMU socket (docs/protocols.md §1). The whole
/// handshake goes out at accept; the connection then stays open until QEMU
/// closes it.
final class VMConnection: PeerSocketDelegate {
    private let socket: PeerSocket
    private let resources: ServedResources
    private let onClose: (VMConnection) -> Void

    init(socket: PeerSocket, resources: ServedResources, onClose: @escaping (VMConnection) -> Void) {
        self.socket = socket
        self.resources = resources
        self.onClose = onClose
        socket.delegate = self
    }

    var peer: PeerCredentials? { socket.peer }

    /// QEMU blocks in device realize until it has the shared memory, so
    /// everything is sent at once, without waiting for QEMU to speak; the
    /// log lines come after, off QEMU's path.
    func start() {
        let regionCount = resources.plan.regionCount
        let vectors = socket.peer.flatMap { resources.doorbellVectors.vectors(ofProcess: $0.pid) }
        socket.send(resources.qemuHandshake(vectorCount: vectors))
        resources.report(.vmConnected(peer: socket.peer))
        if resources.trace {
            let messages = QemuHandshake.messages(regionCount: regionCount, vectorCount: vectors)
            resources.report(.bytes(peer: socket.peer, direction: "sent to VM", bytes: messages.flatMap(\.payload)))
        }
        if resources.debug {
            let sent = min(vectors ?? regionCount, regionCount)
            resources.report(.detail("VM \(socket.peer.map(\.description) ?? "unknown peer"): sent version 0, id 1024, "
                + "the shared memory (fd \(resources.sharedMemory.fd.rawValue)), \(sent)× peer 0 with a guest_to_host eventfd, "
                + "\(sent)× id 1024 with a host_to_guest eventfd"))
        }
        if let vectors, vectors != regionCount {
            let dead = vectors < regionCount ? resources.plan.regions[vectors...].map(\.name) : []
            resources.report(.vmVectorMismatch(peer: socket.peer, vectors: vectors, regions: regionCount, deadRegions: dead))
        }
    }

    /// Goes on with a VM whose handshake a previous server process of
    /// this VM sent: nothing is sent, QEMU sees no change.
    func resume() {
        resources.report(.vmResumed(peer: socket.peer))
    }

    /// The connection's fd, for the service manager's store.
    var rawFD: Int32 { socket.fd.rawValue }

    /// True unless QEMU has hung up (checked without blocking), so a VM that
    /// closed a moment ago does not block its successor.
    var isAlive: Bool {
        !socket.isClosed && !UnixSocket.peerHasHungUp(socket.fd)
    }

    func close(reason: String) {
        guard !socket.isClosed else { return }
        socket.close()
        resources.report(.vmDisconnected(peer: socket.peer, reason: reason))
        onClose(self)
    }

    /// Closes without a disconnect report (server shutdown).
    func closeSilently() {
        guard !socket.isClosed else { return }
        socket.close()
        onClose(self)
    }

    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event) {
        switch event {
        case .received, .unexpectedFDs, .flushed:
            break  // QEMU sends nothing in protocol 0; stray bytes and fds are dropped
        case .endOfStream:
            close(reason: "QEMU closed the connection")
        case let .failed(error):
            close(reason: "connection failed: \(error)")
        }
    }
}
