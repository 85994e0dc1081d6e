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
        self.sharedMemory = sharedMemory
        self.channels = channels
        self.qemuSocketPath = qemuSocketPath
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
    private let onDecided: (ClientConnection) -> Void
    private let onClose: (ClientConnection) -> Void

    /// Loop time (ms) by which the handshake must be decided.
    let deadline: UInt64
    // Links of the server's list of undecided clients (oldest first), so a
    // client leaves it in O(1) and the handshake timer only looks at its head.
    var newerPending: ClientConnection?
    weak var olderPending: ClientConnection?

    init(socket: PeerSocket, resources: ServedResources, deadline: UInt64,
         onDecided: @escaping (ClientConnection) -> Void, onClose: @escaping (ClientConnection) -> Void) {
        self.socket = socket
        self.resources = resources
        self.handshake = ClientHandshake(regionIndexByName: resources.regionIndexByName)
        self.deadline = deadline
        self.onDecided = onDecided
        self.onClose = onClose
        socket.onEvent = { [unowned self] event in self.handle(event) }
    }

    /// Step 1: the protocol version, right away.
    func start() {
        socket.send([.init(bytes: ClientHandshake.greeting, fds: [])])
    }

    /// The deadline passed without a decision.
    func timeOut(after milliseconds: UInt64) {
        refuse("no complete handshake within \(milliseconds) ms")
    }

    func close() {
        guard !socket.isClosed else { return }
        socket.close()
        onDecided(self)
        onClose(self)
    }

    private func handle(_ event: PeerSocket.Event) {
        switch event {
        case let .received(bytes):
            apply(handshake.receive(bytes))
        case .endOfStream:
            apply(handshake.receiveEndOfStream())
        case .unexpectedFDs:
            refuse("sent file descriptors (closed unread); the handshake carries none")
        case .flushed:
            // Step 4: after the fds are out, the server closes.
            if case .grant? = handshake.decision { close() }
        case let .failed(error):
            refuse("connection failed: \(error)")
        }
    }

    private func apply(_ decision: ClientHandshake.Decision) {
        switch decision {
        case .needMoreInput:
            break
        case let .grant(index):
            onDecided(self)
            // Step 3: 8 bytes carrying guest_to_host, host_to_guest, shm.
            let channels = resources.channels[index]
            let fds = [channels.guestToHost.rawValue, channels.hostToGuest.rawValue, resources.sharedMemory.fd.rawValue]
            resources.report(.clientServed(region: resources.plan.regions[index].name, index: index, peer: socket.peer))
            socket.send([.init(bytes: ClientHandshake.grantPayload, fds: fds)])
        case let .refuse(refusal):
            refuse(refusal.description)
        }
    }

    private func refuse(_ reason: String) {
        guard !socket.isClosed else { return }
        resources.report(.clientRefused(reason: reason, peer: socket.peer))
        close()
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
        case .received, .unexpectedFDs, .flushed:
            break  // QEMU sends nothing in protocol 0; stray bytes and fds are dropped
        case .endOfStream:
            close(reason: "QEMU closed the connection")
        case let .failed(error):
            close(reason: "connection failed: \(error)")
        }
    }
}
