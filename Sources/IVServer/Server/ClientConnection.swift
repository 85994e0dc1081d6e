import EventLoop
import LinuxSystem
import ServerCore
import WireFormat

/// One host client on the client socket, from accept to close: the HALD
/// handshake (docs/protocols.md §2) driven by `ClientHandshake`. Its
/// lifecycle:
///
///     pending ──(grant, status)──> replying ──(reply sent)──> closed
///        └──────(refused, timed out, made room, hung up)─────────┘
///
/// While pending it is in the server's `PendingList`, by its deadline.
final class ClientConnection: PeerSocketDelegate {
    enum State: Equatable {
        /// Waiting for its request, until `deadline`.
        case pending
        /// Decided: the reply (a grant, the status text) is going out.
        case replying
        case closed
    }

    private(set) var state = State.pending
    private let socket: PeerSocket
    private let resources: ServedResources
    private var handshake: ClientHandshake
    /// Who keeps the clients, told of every change of state (from the
    /// state it left). Held strongly and told through its own methods, as
    /// every connection tells its owner (an unowned reference would cost a
    /// check on every use); the owner drops the client on close.
    private let owner: ClientAdmission

    /// Loop time (ms) by which the handshake must be decided.
    let deadline: UInt64
    // Its place in a ClientList (only the list changes these): strong links
    // (a weak one would cost each client a side table), cleared when it
    // leaves the list.
    fileprivate var newer: ClientConnection?
    fileprivate var older: ClientConnection?
    fileprivate var list: ObjectIdentifier?

    init(socket: PeerSocket, resources: ServedResources, deadline: UInt64, owner: ClientAdmission) {
        self.socket = socket
        self.resources = resources
        self.handshake = ClientHandshake(regions: resources.regionNames)
        self.deadline = deadline
        self.owner = owner
        socket.delegate = self
    }

    /// The only way the state changes; anything but the arrows above is a bug.
    private func transition(to next: State) {
        switch (state, next) {
        case (.pending, .replying), (.pending, .closed), (.replying, .closed): break
        default: preconditionFailure("host client connection: \(state) -> \(next)")
        }
        let previous = state
        state = next
        owner.client(self, left: previous)
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
        guard state != .closed else { return }
        transition(to: .closed)
        socket.close()
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
            if state == .replying { close() }
        case let .failed(error) where state == .replying:
            // It went away before taking its reply: it was served all the same.
            if resources.debug { resources.report(.detail("client \(describe): left before its reply was sent: \(error)")) }
            close()
        case let .failed(error):
            refuse("connection failed: \(error)")
        }
    }

    private func apply(_ decision: ClientHandshake.Decision) {
        switch decision {
        case .needMoreInput:
            break
        case let .grant(index):
            transition(to: .replying)
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
        case let .query(query):
            transition(to: .replying)
            socket.send(OutgoingMessages([.init(bytes: owner.answer(query), fds: [])]))
            if resources.debug { resources.report(.detail("client \(describe): sent the answer to its \(query) request")) }
        case let .refuse(refusal):
            refuse(refusal.description)
        }
    }

    private func refuse(_ reason: String) {
        guard state == .pending else { return }
        resources.refused += 1
        if owner.logsRefusal(of: self) { resources.report(.clientRefused(reason: reason, peer: socket.peer)) }
        close()
    }
}

/// Host clients in one state, oldest first, linked through the clients
/// themselves: adding and leaving cost no hashing and no allocation, and a
/// client leaves from anywhere in O(1). The pending ones are in greeting
/// order, which (every client has the same timeout) is deadline order: the
/// handshake timer looks only at the head.
final class ClientList {
    private(set) var oldest: ClientConnection?
    private var newest: ClientConnection?
    private(set) var count = 0

    func append(_ client: ClientConnection) {
        precondition(client.list == nil, "a client in two lists")
        client.list = ObjectIdentifier(self)
        client.older = newest
        newest?.newer = client
        newest = client
        if oldest == nil { oldest = client }
        count += 1
    }

    func remove(_ client: ClientConnection) {
        precondition(client.list == ObjectIdentifier(self), "a client left a list it was not in")
        let older = client.older
        let newer = client.newer
        older?.newer = newer
        newer?.older = older
        if oldest === client { oldest = newer }
        if newest === client { newest = older }
        client.older = nil
        client.newer = nil
        client.list = nil
        count -= 1
    }

    /// Closes every client in the list (each leaves it as it closes).
    func closeAll() {
        while let client = oldest {
            client.close()
            precondition(oldest !== client, "a closed client stayed listed")
        }
    }
}

extension ClientConnection: Equatable {
    /// The same connection (PendingShares knows clients by identity).
    static func == (a: ClientConnection, b: ClientConnection) -> Bool { a === b }
}
