/// Who keeps the clients: told when a handshake is decided (it leaves the
/// pending list) and when the connection closes (it can be let go).
protocol ClientConnectionOwner: AnyObject {
    func clientDecided(_ client: ClientConnection)
    func clientClosed(_ client: ClientConnection)
    /// The server's state as text, for a status request.
    func statusReport() -> [UInt8]
}

/// One host client on the client socket, from accept to close: the HALD
/// handshake (docs/protocols.md §2) driven by `ClientHandshake`.
final class ClientConnection: PeerSocketDelegate {
    private let socket: PeerSocket
    private let resources: ServedResources
    private var handshake: ClientHandshake
    /// Strong (the server outlives its clients, and an unowned reference
    /// costs a check on every use); the server drops the client on close.
    private let owner: ClientConnectionOwner
    /// The socket's fd number while it is open: the server's key for it.
    let slot: Int32

    /// Loop time (ms) by which the handshake must be decided.
    let deadline: UInt64
    // Links of the server's list of undecided clients (oldest first), so a
    // client leaves it in O(1) and the handshake timer only looks at its head.
    // Both are strong (a weak link would cost each client a side table);
    // the server unlinks a client when it is decided or closed.
    var newerPending: ClientConnection?
    var olderPending: ClientConnection?

    init(socket: PeerSocket, resources: ServedResources, deadline: UInt64, owner: ClientConnectionOwner) {
        self.socket = socket
        self.resources = resources
        self.handshake = ClientHandshake(regions: resources.regionNames)
        self.deadline = deadline
        self.owner = owner
        slot = socket.fd.rawValue
        socket.delegate = self
    }

    /// Step 1: the protocol version, right away.
    func start() {
        socket.send(resources.greeting)
        if resources.debug { resources.report(.detail("client \(describe): sent the greeting (protocol version 0)")) }
        if resources.trace { resources.report(.bytes(peer: socket.peer, direction: "sent to client", bytes: ClientHandshake.greeting)) }
    }

    private var describe: String { socket.peer.map(\.description) ?? "unknown peer" }

    /// The deadline passed without a decision.
    func timeOut(after milliseconds: UInt64) {
        refuse("no complete handshake within \(milliseconds) ms")
    }

    /// Closed, undecided, because its process or user is over its share of
    /// pending handshakes and a newcomer needs the slot. Not logged one by
    /// one: the server logs the process once.
    func closeToMakeRoom() {
        close()
    }

    /// The peer's process and user, as SO_PEERCRED gave them at accept.
    var peerPID: Int32 { socket.peer?.pid ?? 0 }
    var peerUID: UInt32 { socket.peer?.uid ?? 0 }

    func close() {
        guard !socket.isClosed else { return }
        socket.close()
        owner.clientDecided(self)
        owner.clientClosed(self)
    }

    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event) {
        switch event {
        case let .received(bytes):
            if resources.trace { resources.report(.bytes(peer: socket.peer, direction: "received from client", bytes: Array(bytes))) }
            apply(handshake.receive(bytes))
        case .endOfStream:
            apply(handshake.receiveEndOfStream())
        case .unexpectedFDs:
            refuse("sent file descriptors (closed unread); the handshake carries none")
        case .flushed:
            // Step 4: after the fds are out, the server closes.
            switch handshake.decision {
            case .grant?, .status?: close()
            default: break
            }
        case let .failed(error):
            refuse("connection failed: \(error)")
        }
    }

    private func apply(_ decision: ClientHandshake.Decision) {
        switch decision {
        case .needMoreInput:
            break
        case let .grant(index):
            owner.clientDecided(self)
            resources.served[index] += 1
            // Step 3: 8 bytes carrying guest_to_host, host_to_guest, shm.
            resources.report(.clientServed(region: resources.plan.regions[index].name, index: index, peer: socket.peer))
            socket.send(resources.grants[index])
            if resources.trace { resources.report(.bytes(peer: socket.peer, direction: "sent to client", bytes: ClientHandshake.grantPayload)) }
            if resources.debug {
                let channel = resources.channels[index]
                resources.report(.detail("client \(describe): sent the grant for region #\(index) (8 bytes, fds guest_to_host "
                    + "\(channel.guestToHost.rawValue), host_to_guest \(channel.hostToGuest.rawValue), shared memory "
                    + "\(resources.sharedMemory.fd.rawValue))"))
            }
        case .status:
            owner.clientDecided(self)
            socket.send(OutgoingMessages([.init(bytes: owner.statusReport(), fds: [])]))
            if resources.debug { resources.report(.detail("client \(describe): sent the server's state (status request)")) }
        case let .refuse(refusal):
            refuse(refusal.description)
        }
    }

    private func refuse(_ reason: String) {
        guard !socket.isClosed else { return }
        resources.refused += 1
        resources.report(.clientRefused(reason: reason, peer: socket.peer))
        close()
    }
}
