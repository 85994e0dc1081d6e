import ServerCore
import WireFormat
import EventLoop
import Glibc
import LinuxSystem

/// The multi-peer server (QEMU's ivshmem-server protocol): one shared
/// memory, N eventfds per peer, every peer told of every other. Its
/// lifecycle is ServerCore's (`Servable`), the vSoC server's too: `init`
/// has no side effects, `start` makes the memory and the listening socket
/// (no loop yet, so the service may go to the background in between),
/// `serve` runs the loop until `stop` or `requestStop`, `close` removes
/// what `start` made.
public final class PeerServer: Servable {
    public let configuration: PeerServerConfiguration
    private let events: EventSink
    public let control = ServingControl(of: "multi-peer server")

    // Made by `start`.
    private var lock: InstanceLock?
    private var memory: SharedMemoryFile?
    private var listening: ListeningSocket?
    /// Room for this many connections within the open-file limit.
    private var peerCapacity = 0

    // While serving.
    private var serving: ServingLoop? { control.serving }
    private var listener: Listener?
    private let gate: Gate
    private var ids: PeerIDAllocator
    /// Every open connection (greeting or joined), by ID.
    private var connections: [PeerProtocol.PeerID: PeerConnection] = [:]
    /// Joined peers in the order they joined: a newcomer's greeting lists
    /// them in this order, as QEMU's server does.
    private var joinOrder: [PeerProtocol.PeerID] = []
    private var vectorLookup: DoorbellVectorLookup
    private var peersRejected = 0
    private var peersServed = 0
    /// The memory's room on its filesystem.
    private var room: MemoryRoom?

    /// `handed`: the fds handed to this process by name (a socket unit's
    /// listener; `ServiceManager.takeHandedDescriptors()`), taken at start.
    /// Handed to this process, until `start` takes a socket unit's listener from them.
    private var handed: [String: [OwnedFD]]

    public init(configuration: PeerServerConfiguration, events: EventSink, handed: [String: [OwnedFD]] = [:]) {
        self.configuration = configuration
        self.events = events
        self.handed = handed
        gate = Gate(policy: configuration.accessPolicy, events: events)
        ids = PeerIDAllocator(count: configuration.peerIDCount)
        vectorLookup = DoorbellVectorLookup(socketPath: configuration.socketPath)
    }

    deinit { close() }

    private func report(_ event: PeerEvent) { events.record(event) }
    private func report(_ event: CoreEvent) { events.record(event) }

    /// Takes the lock, makes the memory and listens on the socket. Throws
    /// (StartupError, SystemError) with nothing left behind.
    public func start() throws {
        precondition(control.state == .created, "started twice")
        do {
            if let lockPath = configuration.lockPath { lock = try InstanceLock.acquire(path: lockPath) }
            let (memory, origin) = try SharedMemoryFile.createPlain(
                at: configuration.memory, size: configuration.size, mode: mode_t(configuration.sharedMemoryMode),
                preallocate: configuration.preallocate)
            self.memory = memory
            var room = MemoryRoom(memory: memory, touchable: [0..<memory.size], path: configuration.memory.place,
                                  elsewhere: "another -M name or -m directory")
            room.checkAtStart(events: events)
            self.room = room
            if case let .reused(holders) = origin {
                report(.peerMemoryReused(path: configuration.memory.description, size: memory.size, holders: holders))
            }
            // A systemd socket unit's listener (ivshmem-server@.socket), by its path.
            var handed = self.handed
            self.handed = [:]
            var activated = ActivatedListeners.take(from: &handed, ownPrefix: nil)
            if let unit = activated.take(path: configuration.socketPath) {
                listening = try ListeningSocket.activated(unit.fd, path: configuration.socketPath)
                report(.detail("serving on \(configuration.socketPath), handed in by a socket unit (\(unit.name))"))
            } else {
                if try ListeningSocket.removeLeftover(path: configuration.socketPath) {
                    report(.leftoverRemoved(path: configuration.socketPath, what: "a socket nobody listened on"))
                }
                listening = try ListeningSocket.make(path: configuration.socketPath, mode: configuration.socketMode,
                                                     group: configuration.socketGroup)
            }
            for path in activated.closeRest() { report(.detail("closed a handed-in listener on \(path): not this server's socket")) }
        } catch {
            close()
            throw error
        }
        // Each peer holds its socket and N eventfds; keep 64 for the rest.
        let (capacity, limit) = OpenFiles.capacity(reserving: 64, perConnection: configuration.vectors + 1)
        peerCapacity = capacity
        if peerCapacity < configuration.maximumPeers {
            report(.peerCapacityLimited(maximumPeers: configuration.maximumPeers, capacity: peerCapacity,
                                        openFileLimit: limit, vectors: configuration.vectors))
        }
        control.started()
    }

    /// The memory's size as made (whole huge pages on hugetlbfs).
    public var memorySize: UInt64? { memory?.size }

    /// Serves until `stop` or `requestStop`; `whenReady` runs once the loop
    /// exists, before the `ready` line.
    public func serve(whenReady: (ServingLoop) throws -> Void = { _ in }) throws {
        guard let memory, let listening else { preconditionFailure("serve before start") }
        let serving = try control.beginServing(events: events, closeConnections: { [unowned self] in
            self.listener?.close()
            for connection in Array(self.connections.values) { connection.close(reason: "the server is stopping") }
        }, stopRequested: { [unowned self] in
            self.report(.stopping(signal: 0, handingOver: false))
            self.stop()
        })
        listener = try Listener(listening, readiness: serving.readiness,
                                onAccept: { [unowned self] fd in self.accept(fd) },
                                onError: { [unowned self] error in
                                    self.report(.acceptFailed(socket: self.configuration.socketPath, error: "\(error)")) })
        try control.run(whenReady: whenReady) { report(.peerServerReady(configuration, size: memory.size)) }
    }



    /// Removes the socket and the memory's name, and releases the lock.
    public func close() {
        guard control.beginClosing() else { return }
        listener = nil
        listening?.fd.close()
        if let listening, listening.ownsFile { listening.file.remove() }
        listening = nil
        memory?.file?.remove()
        memory = nil
        lock?.release()
        lock = nil
        control.closed()
        events.flush()
    }

    // MARK: what operators see

    /// What `systemctl status` shows: peers joined, served, refused.
    public struct Status: Equatable {
        var joined: Int
        var served: Int
        var refused: Int
        var memoryShort = false
    }

    /// Nothing outlives a multi-peer server: its peers reconnect.
    public let handsOverFiles = false

    public var status: Status {
        Status(joined: joinOrder.count, served: peersServed, refused: peersRejected + gate.refused,
               memoryShort: room?.shortfallAtStart != nil)
    }

    /// "3 peers joined; 5 served, 0 refused"
    public func statusLine(_ status: Status) -> String {
        "\(status.joined) peers joined; \(status.served) served, \(status.refused) refused" + (room?.statusFragment.map { "; " + $0 } ?? "")
    }

    // MARK: peers

    private func accept(_ fd: OwnedFD) {
        guard let peer = gate.admit(fd, on: configuration.socketPath, refusing: true), let serving, let memory else { return }
        guard connections.count < min(configuration.maximumPeers, peerCapacity) else {
            return reject(fd, peer: peer, reason: connections.count >= configuration.maximumPeers
                ? "\(connections.count) peers are connected (--max-peers \(configuration.maximumPeers))"
                : "\(connections.count) peers are connected and the open-file limit leaves room for no more")
        }
        let vectors: PeerVectors
        do {
            vectors = try PeerVectors(count: configuration.vectors)
        } catch {
            return reject(fd, peer: peer, reason: "cannot make its eventfds: \(error)")
        }
        guard let id = ids.allocate() else { return reject(fd, peer: peer, reason: "no peer ID is free") }
        let kept = vectorLookup.vectors(ofProcess: peer.pid).flatMap { $0 < configuration.vectors ? $0 : nil }
        let connection = PeerConnection(id: id, socket: PeerSocket(readiness: serving.readiness, fd: fd, peer: peer, readSize: 64),
                                        vectors: vectors, kept: kept, owner: self)
        connections[id] = connection
        if let kept {
            report(.peerVectorMismatch(id: id, peer: peer, vectors: kept, serverVectors: configuration.vectors))
        }
        let greeting = PeerProtocol.greeting(for: id, others: joinOrder, vectors: configuration.vectors, kept: kept)
        if events.isEnabled(.trace) {
            report(.bytes(peer: peer, direction: "sending peer \(id)", bytes: greeting.flatMap(\.payload)))
        }
        connection.start(greeting: outgoing(greeting, memory: memory))
    }

    /// Turned away before it has an ID: told so (version -1: QEMU then
    /// fails at once instead of waiting) and closed.
    private func reject(_ fd: OwnedFD, peer: PeerCredentials?, reason: String) {
        peersRejected += 1
        report(.peerRejected(peer: peer, reason: reason))
        Gate.refuse(fd)
    }

    /// Messages as they go out, each with its fd; the peers whose
    /// eventfds they carry are kept open until they are sent.
    private func outgoing(_ messages: [PeerProtocol.Message], memory: SharedMemoryFile) -> OutgoingMessages {
        var retained: [ObjectIdentifier: AnyObject] = [:]
        let prepared = messages.map { message -> OutgoingMessages.Message in
            switch message.attachment {
            case nil:
                return .init(bytes: message.payload, fds: [])
            case .sharedMemory?:
                return .init(bytes: message.payload, fds: [memory.fd.rawValue])
            case let .vector(peer, vector)?:
                let owner = connections[peer]!.vectors
                retained[ObjectIdentifier(owner)] = owner
                return .init(bytes: message.payload, fds: [owner.fds[vector].rawValue])
            }
        }
        return OutgoingMessages(prepared, retaining: Array(retained.values))
    }

    /// Sends `messages` (built per vector count a receiver keeps) to every
    /// open connection but `except`; drops a peer whose queue is over the bound.
    private func broadcast(except excluded: PeerProtocol.PeerID, _ build: (Int?) -> [PeerProtocol.Message]) {
        guard let memory else { return }
        var built: [Int: OutgoingMessages] = [:]
        var overflowing: [PeerConnection] = []
        for (id, connection) in connections where id != excluded {
            let key = connection.kept ?? -1
            let messages = built[key] ?? outgoing(build(connection.kept), memory: memory)
            built[key] = messages
            connection.send(messages)
            if connection.unsentMessages > configuration.maximumQueuedMessages { overflowing.append(connection) }
        }
        for connection in overflowing {
            report(.peerDropped(id: connection.id, peer: connection.peer, unsent: connection.unsentMessages,
                                limit: configuration.maximumQueuedMessages))
            connection.close(reason: "it did not read its messages")
        }
    }

    public func stateLines() -> [String] {
        var lines = ["shared memory \(configuration.memory) (\(memorySize ?? 0) bytes), \(configuration.vectors) vectors per peer; "
            + "socket \(configuration.socketPath); \(joinOrder.count) peers joined, \(connections.count - joinOrder.count) mid-greeting; "
            + "\(peersServed) served, \(peersRejected + gate.refused) refused"]
        if let room { lines.append(room.stateLine()) }
        for id in joinOrder {
            guard let connection = connections[id] else { continue }
            lines.append("peer \(id): \(connection.peer.map(\.description) ?? "unknown process"), \(connection.unsentMessages) messages unsent"
                + (connection.kept.map { ", device keeps \($0) vectors" } ?? ""))
        }
        return lines
    }
}

/// What its peers tell it.
extension PeerServer {
    func peerJoined(_ connection: PeerConnection) {
        joinOrder.append(connection.id)
        peersServed += 1
        report(.peerJoined(id: connection.id, peer: connection.peer, peers: joinOrder.count))
        let vectors = configuration.vectors
        broadcast(except: connection.id) { kept in PeerProtocol.announcement(of: connection.id, vectors: vectors, kept: kept) }
    }

    func peerLeft(_ connection: PeerConnection, wasJoined: Bool, reason: String) {
        connections[connection.id] = nil
        ids.release(connection.id)
        if wasJoined, let index = joinOrder.firstIndex(of: connection.id) { joinOrder.remove(at: index) }
        report(.peerLeft(id: connection.id, peer: connection.peer, reason: reason, announced: wasJoined, peers: joinOrder.count))
        if wasJoined && control.state == .serving {
            broadcast(except: connection.id) { _ in [PeerProtocol.departure(of: connection.id)] }
        }
    }
}

// Everything runs on the loop's thread, which is the thread that calls
// `serve`; `requestStop` alone may come from any other (it only wakes the
// loop through uv_async, under a lock).
extension PeerServer: @unchecked Sendable {}
