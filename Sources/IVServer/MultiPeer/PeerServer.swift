import ServerCore
import WireFormat
import EventLoop
import Glibc
import LinuxSystem

/// The multi-peer server (QEMU's ivshmem-server protocol): one shared
/// memory, N eventfds per peer, every peer told of every other. Split as
/// QEMU's contrib server is: `start` creates the memory and the listening
/// socket (no loop yet, so a caller may daemonize in between), `serve`
/// runs the loop until `stop` or a stop signal, `close` removes what
/// `start` created. One thread: the caller's.
public final class PeerServer {
    public let configuration: PeerServerConfiguration
    private let events: EventSink

    // From `start`.
    private var lock: InstanceLock?
    private var memory: SharedMemoryFile?
    private var listeningFD: OwnedFD?
    private var socketFile: CreatedFile?

    // While serving.
    private var loop: EventLoop?
    private var readiness: ReadinessSet?
    private var listener: Listener?
    private var signals: [SignalHandle] = []
    private var beforeWaiting: PrepareHandle?
    private var ids = PeerIDAllocator()
    /// Every open connection (greeting or joined), by ID.
    private var connections: [PeerProtocol.PeerID: PeerConnection] = [:]
    /// Joined peers in the order they joined: a newcomer's greeting lists
    /// them in this order, as QEMU's server does.
    private var joinOrder: [PeerProtocol.PeerID] = []
    private var vectorLookup: DoorbellVectorLookup
    /// Room for this many connections within the open-file limit.
    private var peerCapacity = 0
    private var peersRefused = 0
    private var peersServed = 0

    public init(configuration: PeerServerConfiguration, events: EventSink) {
        self.configuration = configuration
        self.events = events
        vectorLookup = DoorbellVectorLookup(socketPath: configuration.socketPath)
    }

    deinit { close() }

    private func report(_ event: PeerEvent) { events.record(event) }
    private func report(_ event: CoreEvent) { events.record(event) }

    /// Takes the lock, makes the memory and listens on the socket. Throws
    /// (StartupError, SystemError) with nothing left behind.
    public func start() throws {
        precondition(memory == nil, "started twice")
        do {
            if let lockPath = configuration.lockPath { lock = try InstanceLock.acquire(path: lockPath) }
            let (memory, origin) = try SharedMemoryFile.createPlain(
                at: configuration.memory, size: configuration.size, mode: mode_t(configuration.sharedMemoryMode))
            self.memory = memory
            if case let .reused(holders) = origin {
                report(.peerMemoryReused(path: configuration.memory.description, size: memory.size, holders: holders))
            }
            if try Listener.removeLeftover(path: configuration.socketPath) {
                report(.leftoverRemoved(path: configuration.socketPath, what: "a socket nobody listened on"))
            }
            let fd = try UnixSocket.listen(path: configuration.socketPath, mode: mode_t(configuration.socketMode),
                                           group: configuration.socketGroup.map { gid_t($0) })
            listeningFD = fd
            socketFile = try CreatedFile(path: configuration.socketPath)
        } catch {
            close()
            throw error
        }
        // Each peer holds its socket and N eventfds; keep 64 for the rest.
        let limit = ProcessLimits.raiseOpenFileLimit()
        peerCapacity = max(0, (limit - 64) / (configuration.vectors + 1))
        if peerCapacity < configuration.maximumPeers {
            report(.peerCapacityLimited(maximumPeers: configuration.maximumPeers, capacity: peerCapacity,
                                        openFileLimit: limit, vectors: configuration.vectors))
        }
    }

    /// The memory's size as made (whole huge pages on hugetlbfs).
    public var memorySize: UInt64? { memory?.size }

    /// Serves until `stop` or, when `stopSignals` is not empty, one of them;
    /// `onReady` runs once it accepts peers (the executable tells its
    /// waiting parent and the service manager there).
    public func serve(stopSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP], onReady: () -> Void = {}) throws {
        guard let memory, let listeningFD, let socketFile else { preconditionFailure("serve before start") }
        let loop = try EventLoop()
        self.loop = loop
        defer {
            stop()
            loop.close()
            self.loop = nil
        }
        let readiness = try ReadinessSet(loop: loop)
        self.readiness = readiness
        listener = try Listener(readiness: readiness, listening: listeningFD, path: configuration.socketPath, file: socketFile,
                                onAccept: { [unowned self] fd in self.accept(fd) },
                                onError: { [unowned self] error in
                                    self.report(.acceptFailed(socket: self.configuration.socketPath, error: "\(error)")) })
        self.listeningFD = nil  // the listener owns it now
        beforeWaiting = try PrepareHandle(loop: loop) { [unowned self] in self.events.flush() }
        for signal in stopSignals {
            signals.append(try SignalHandle(loop: loop, signal: signal) { [unowned self] signal in
                self.report(.stopping(signal: signal, handingOver: false))
                self.stop()
            })
        }
        signals.append(try SignalHandle(loop: loop, signal: SIGUSR1) { [unowned self] _ in
            for line in self.stateLines() { self.report(.state(line)) }
        })
        report(.peerServerReady(configuration, size: memory.size))
        onReady()
        loop.run()
    }

    /// Closes the listener and every connection; `serve` then returns.
    /// Loop thread only.
    public func stop() {
        listener?.close()
        listener = nil
        for connection in Array(connections.values) { connection.close(reason: "the server is stopping") }
        signals.forEach { $0.close() }
        signals = []
        beforeWaiting?.close()
        beforeWaiting = nil
        readiness?.close()
        readiness = nil
    }

    /// Removes the socket and the memory's name, and releases the lock.
    public func close() {
        listeningFD?.close()
        listeningFD = nil
        socketFile?.remove()
        socketFile = nil
        memory?.file?.remove()
        memory = nil
        lock?.release()
        lock = nil
        events.flush()
    }

    // MARK: peers

    private func accept(_ fd: OwnedFD) {
        let (peer, allowed) = configuration.accessPolicy.check(fd)
        guard allowed, let readiness, let memory else {
            peersRefused += 1
            report(.peerRefused(socket: configuration.socketPath, peer: peer))
            return refuse(fd)
        }
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
        let kept = peer.flatMap { vectorLookup.vectors(ofProcess: $0.pid) }.flatMap { $0 < configuration.vectors ? $0 : nil }
        let connection = PeerConnection(id: id, socket: PeerSocket(readiness: readiness, fd: fd, peer: peer, readSize: 64),
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
        peersRefused += 1
        report(.peerRejected(peer: peer, reason: reason))
        refuse(fd)
    }

    private func refuse(_ fd: OwnedFD) {
        // 8 bytes into a fresh socket's empty buffer cannot block.
        _ = try? UnixSocket.send(fd, PeerProtocol.Message(value: PeerProtocol.refusalVersion).payload[...])
        fd.close()
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

    private func stateLines() -> [String] {
        var lines = ["shared memory \(configuration.memory) (\(memorySize ?? 0) bytes), \(configuration.vectors) vectors per peer; "
            + "socket \(configuration.socketPath); \(joinOrder.count) peers joined, \(connections.count - joinOrder.count) mid-greeting; "
            + "\(peersServed) served, \(peersRefused) refused"]
        for id in joinOrder {
            guard let connection = connections[id] else { continue }
            lines.append("peer \(id): \(connection.peer.map(\.description) ?? "unknown process"), \(connection.unsentMessages) messages unsent"
                + (connection.kept.map { ", device keeps \($0) vectors" } ?? ""))
        }
        return lines
    }
}

extension PeerServer: PeerConnectionOwner {
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
        if wasJoined && listener != nil {
            broadcast(except: connection.id) { _ in [PeerProtocol.departure(of: connection.id)] }
        }
    }
}
