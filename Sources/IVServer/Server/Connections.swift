/// What connections need from the server: the fds they hand out and where
/// to report.
final class ServedResources {
    let plan: LayoutPlan
    let sharedMemory: SharedMemoryFile
    let channels: [RegionChannels]
    let regionIndexByName: [String: Int]
    let qemuSocketPath: String
    let report: (ServerEvent) -> Void

    init(plan: LayoutPlan, sharedMemory: SharedMemoryFile, channels: [RegionChannels], qemuSocketPath: String,
         report: @escaping (ServerEvent) -> Void) {
        self.plan = plan
        self.qemuSocketPath = qemuSocketPath
        self.sharedMemory = sharedMemory
        self.channels = channels
        self.report = report
        var names: [String: Int] = [:]
        for region in plan.regions { names[region.name] = region.index }
        regionIndexByName = names
    }

    func rawFD(for attachment: QemuHandshake.Attachment) -> Int32 {
        switch attachment {
        case .sharedMemory: return sharedMemory.fd.rawValue
        case let .guestToHost(region): return channels[region].guestToHost.rawValue
        case let .hostToGuest(region): return channels[region].hostToGuest.rawValue
        }
    }
}

/// One host client on the client socket, from accept to close: the HALD
/// handshake (docs/protocols.md §2) driven by `ClientHandshake`.
final class ClientConnection {
    private let socket: PeerSocket
    private let resources: ServedResources
    private var handshake: ClientHandshake
    private let onClose: (ClientConnection) -> Void

    init(socket: PeerSocket, resources: ServedResources, onClose: @escaping (ClientConnection) -> Void) {
        self.socket = socket
        self.resources = resources
        self.handshake = ClientHandshake(regionIndexByName: resources.regionIndexByName)
        self.onClose = onClose
        socket.onEvent = { [unowned self] event in self.handle(event) }
    }

    /// Step 1: the protocol version, right away.
    func start() {
        socket.send([.init(bytes: ClientHandshake.greeting, fds: [])])
    }

    func close() {
        guard !socket.isClosed else { return }
        socket.close()
        onClose(self)
    }

    private func handle(_ event: PeerSocket.Event) {
        switch event {
        case let .received(bytes):
            apply(handshake.receive(bytes))
        case .endOfStream:
            apply(handshake.receiveEndOfStream())
        case .flushed:
            // Step 4: after the fds are out, the server closes.
            if case .grant? = handshake.decision { close() }
        case let .failed(error):
            resources.report(.clientRefused(reason: "connection failed: \(error)", peer: socket.peer))
            close()
        }
    }

    private func apply(_ decision: ClientHandshake.Decision) {
        switch decision {
        case .needMoreInput:
            break
        case let .grant(index):
            // Step 3: 8 bytes carrying guest_to_host, host_to_guest, shm.
            let channels = resources.channels[index]
            let fds = [channels.guestToHost.rawValue, channels.hostToGuest.rawValue, resources.sharedMemory.fd.rawValue]
            resources.report(.clientServed(region: resources.plan.regions[index].name, index: index, peer: socket.peer))
            socket.send([.init(bytes: ClientHandshake.grantPayload, fds: fds)])
        case let .refuse(refusal):
            resources.report(.clientRefused(reason: refusal.description, peer: socket.peer))
            close()
        }
    }
}

/// The VM's QEMU on the QEMU socket (docs/protocols.md §1). The whole
/// handshake goes out at accept; the connection then stays open until QEMU
/// closes it.
final class VMConnection {
    private let socket: PeerSocket
    private let resources: ServedResources
    private let onClose: (VMConnection) -> Void

    init(socket: PeerSocket, resources: ServedResources, onClose: @escaping (VMConnection) -> Void) {
        self.socket = socket
        self.resources = resources
        self.onClose = onClose
        socket.onEvent = { [unowned self] event in self.handle(event) }
    }

    var peer: PeerCredentials? { socket.peer }

    /// QEMU blocks in device realize until it has the shared memory, so
    /// everything is sent at once, without waiting for QEMU to speak.
    func start() {
        resources.report(.vmConnected(peer: socket.peer))
        let regionCount = resources.plan.regionCount
        let vectors = socket.peer
            .flatMap { ProcessTable.commandLine(of: $0.pid) }
            .flatMap { QemuCommandLine.doorbellVectors(arguments: $0, socketPath: resources.qemuSocketPath) }
        if let vectors, vectors != regionCount {
            let dead = vectors < regionCount ? resources.plan.regions[vectors...].map(\.name) : []
            resources.report(.vmVectorMismatch(peer: socket.peer, vectors: vectors, regions: regionCount, deadRegions: dead))
        }
        let messages = QemuHandshake.messages(regionCount: regionCount, vectorCount: vectors).map { message in
            PeerSocket.Outgoing(bytes: message.payload, fds: message.attachment.map { [resources.rawFD(for: $0)] } ?? [])
        }
        socket.send(messages)
    }

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

    private func handle(_ event: PeerSocket.Event) {
        switch event {
        case .received:
            break  // QEMU sends nothing in protocol 0; ignore stray bytes
        case .flushed:
            break
        case .endOfStream:
            close(reason: "QEMU closed the connection")
        case let .failed(error):
            close(reason: "connection failed: \(error)")
        }
    }
}
