import LinuxSystem
import Glibc
import WireFormat

/// The host as a peer of a multi-peer ivshmem server (QEMU's ivshmem-server
/// protocol; `ivserver multi-peer`): it gets an ID, the shared memory and
/// its own vectors like any VM, can ring any peer's vector, and is told of
/// peers as they join and leave.
///
/// Single-threaded: the server's announcements are read while you wait
/// (`wait`, `nextEvent`) and before each ring, so `peers` is as fresh as
/// your last call. Joins and leaves seen during other calls are kept for
/// `nextEvent`.
public final class Peer {
    public typealias ID = UInt16

    /// What `nextEvent` reports.
    public enum Event: Equatable, Sendable {
        /// One of our vectors was rung `count` times since it was last read.
        case interrupt(vector: Int, count: UInt64)
        /// A peer joined, with its vectors (eventfds) all received.
        case joined(peer: ID, vectors: Int)
        case left(peer: ID)
    }

    /// QEMU's ivshmem-server's default socket.
    public static let defaultSocketPath = PeerProtocol.defaultSocketPath

    public let socketPath: String
    /// Our ID: what other peers write to their Doorbell's upper 16 bits.
    public let id: ID
    /// The whole shared memory, mapped once; bounds-checked.
    public let memory: RegionMemory
    private let socket: ClientSocket
    private var ownVectors: [OwnedFD] = []
    /// Other peers' eventfds, by ID; `order` is the order they came in.
    private var others: [ID: [OwnedFD]] = [:]
    private var order: [ID] = []
    private var announced: Set<ID> = []
    private var events: [Event] = []

    /// Connects and reads the greeting: version 0, our ID, the memory, the
    /// peers already there and our own vectors. `timeout` bounds each step.
    ///
    /// The protocol does not say how many vectors a peer has (QEMU knows
    /// from its own `vectors=`). Give `vectors` (the server's `-n`) to wait
    /// for exactly that many; without it, when other peers are there, as
    /// many as they have (a server gives every peer the same count), and
    /// when we are alone, those that have arrived by the first one's
    /// reading (the rest are taken in by the next call that reads the
    /// server's messages, so `vectorCount` may grow).
    public static func connect(socket path: String = defaultSocketPath, vectors expected: Int? = nil,
                               timeout: Duration = .seconds(5)) throws(IVClientError) -> Peer {
        let fail = { (kind: IVClientError.Kind) in IVClientError(kind, socketPath: path, region: nil) }
        let socket = try ClientSocket.connect(path: path, timeout: timeout, fail: fail)
        let version = try Self.receive(socket)
        if version.value == PeerProtocol.refusalVersion && version.fd == nil { throw fail(.refused) }
        guard version.value == PeerProtocol.protocolVersion, version.fd == nil else { throw fail(.unsupportedPeerProtocol(serverVersion: version.value)) }
        let own = try Self.receive(socket)
        guard let id = ID(exactly: own.value), own.fd == nil else {
            throw fail(.protocolViolation("an ID of \(own.value)\(own.fd == nil ? "" : " with an fd") instead of 0...65535"))
        }
        let marker = try Self.receive(socket)
        guard marker.value == PeerProtocol.sharedMemoryMarker, let memoryFD = marker.fd else {
            throw fail(.protocolViolation("message 3 is \(marker.value)\(marker.fd == nil ? " without an fd" : "") instead of -1 with the shared memory"))
        }
        let size: UInt64
        do {
            size = try SharedMemoryFile.size(of: memoryFD)
        } catch {
            throw IVClientError(error, "fstat of the shared memory", socketPath: path, region: nil)
        }
        let memory = try RegionMemory(fd: memoryFD, offset: 0, count: Int(size), socketPath: path, region: nil)
        let peer = Peer(socketPath: path, id: id, memory: memory, socket: socket)
        if let expected, expected < 1 { throw fail(.invalidArgument("a peer has at least 1 vector, not \(expected)")) }
        // Up to our first own vector (the others' come before it) ...
        while peer.ownVectors.isEmpty { try peer.handle(Self.receive(socket)) }
        // ... then the rest of ours: as many as asked for, or as the others have.
        let wanted = expected ?? peer.others.values.map(\.count).max() ?? 1
        while peer.ownVectors.count < wanted { try peer.handle(Self.receive(socket)) }
        try peer.readAnnouncements(timeout: .zero)
        // What was there before us is not news.
        peer.events.removeAll()
        peer.announced = Set(peer.others.keys)
        return peer
    }

    private init(socketPath: String, id: ID, memory: RegionMemory, socket: ClientSocket) {
        self.socketPath = socketPath
        self.id = id
        self.memory = memory
        self.socket = socket
    }

    private func fail(_ kind: IVClientError.Kind) -> IVClientError {
        IVClientError(kind, socketPath: socketPath, region: nil)
    }

    /// Our vectors: how many interrupt lines others can ring us on.
    public var vectorCount: Int { ownVectors.count }

    /// The other peers and how many of their vectors we hold, by ID.
    public var peers: [(id: ID, vectors: Int)] {
        others.keys.sorted().map { ($0, others[$0]!.count) }
    }

    /// How many vectors `peer` has (as far as we hold its eventfds).
    public func vectorCount(of peer: ID) throws(IVClientError) -> Int {
        try readAnnouncements(timeout: .zero)
        if peer == id { return ownVectors.count }
        guard let vectors = others[peer] else { throw fail(.unknownPeer(peer, known: [id] + others.keys.sorted())) }
        return vectors.count
    }

    // MARK: ringing

    /// Interrupts `peer` on `vector` (what a guest does by writing
    /// `(peer << 16) | vector` to its Doorbell). Ringing ourselves works too.
    public func ring(peer: ID, vector: Int) throws(IVClientError) {
        try readAnnouncements(timeout: .zero)
        let vectors = peer == id ? ownVectors : others[peer]
        guard let vectors else { throw fail(.unknownPeer(peer, known: [id] + others.keys.sorted())) }
        guard vectors.indices.contains(vector) else {
            throw fail(.invalidArgument("peer \(peer) has vectors 0...\(vectors.count - 1); there is no vector \(vector)"))
        }
        do {
            try EventFD.signal(vectors[vector])
        } catch {
            throw IVClientError(error, "write to peer \(peer)'s eventfd", socketPath: socketPath, region: nil)
        }
    }

    /// Rings every other peer on `vector`, or on all its vectors when nil;
    /// how many eventfds were rung.
    @discardableResult
    public func ringAll(vector: Int? = nil) throws(IVClientError) -> Int {
        try readAnnouncements(timeout: .zero)
        var rung = 0
        for peer in others.keys.sorted() {
            let vectors = others[peer]!
            for index in vector.map({ [$0] }) ?? Array(vectors.indices) where vectors.indices.contains(index) {
                try ring(peer: peer, vector: index)
                rung += 1
            }
        }
        return rung
    }

    // MARK: waiting

    /// Waits for an interrupt on our `vector`: how many rings it counted
    /// (the counter is reset when `consume`, else left as it was), or nil
    /// when `timeout` passed first (nil: no limit). Announcements that
    /// arrive meanwhile are kept for `nextEvent`.
    public func wait(vector: Int, timeout: Duration?, consume: Bool = true) throws(IVClientError) -> UInt64? {
        guard ownVectors.indices.contains(vector) else {
            throw fail(.invalidArgument("this peer has vectors 0...\(ownVectors.count - 1); there is no vector \(vector)"))
        }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let count = try take(vector: vector, consume: consume) { return count }
            var entries = [pollfd(fd: ownVectors[vector].rawValue, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: socket.fd.rawValue, events: Int16(POLLIN), revents: 0)]
            let left = deadline.map { max($0 - ContinuousClock.now, .zero) }
            let ready = try poll(&entries, timeout: left)
            if entries[1].revents != 0 { try readAnnouncements(timeout: .zero) }
            if ready == 0, let deadline, ContinuousClock.now >= deadline { return nil }
        }
    }

    /// The next interrupt on any of our vectors, join or leave, or nil when
    /// `timeout` passed first (nil: no limit). Interrupts are taken
    /// (counters reset); several pending come one per call, lowest vector first.
    public func nextEvent(timeout: Duration?) throws(IVClientError) -> Event? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if !events.isEmpty { return events.removeFirst() }
            var entries = ownVectors.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            entries.append(pollfd(fd: socket.fd.rawValue, events: Int16(POLLIN), revents: 0))
            let left = deadline.map { max($0 - ContinuousClock.now, .zero) }
            let ready = try poll(&entries, timeout: left)
            for vector in ownVectors.indices where entries[vector].revents != 0 {
                if let count = try take(vector: vector, consume: true) { return .interrupt(vector: vector, count: count) }
            }
            if entries.last!.revents != 0 { try readAnnouncements(timeout: .zero) }
            if ready == 0, let deadline, ContinuousClock.now >= deadline { return events.isEmpty ? nil : events.removeFirst() }
        }
    }

    private func poll(_ entries: inout [pollfd], timeout: Duration?) throws(IVClientError) -> Int {
        do {
            return try Posix.poll(&entries, timeout: timeout)
        } catch {
            throw IVClientError(error, socketPath: socketPath, region: nil)
        }
    }

    /// Hangs up: the server tells the others we left.
    public func close() {
        socket.fd.close()
    }

    deinit { close() }

    // MARK: the server's messages

    /// A vector's count, or nil when it is 0; written back unless `consume`.
    private func take(vector: Int, consume: Bool) throws(IVClientError) -> UInt64? {
        let fd = ownVectors[vector]
        let taken: UInt64?
        do {
            taken = try EventFD.take(fd)
        } catch {
            throw IVClientError(error, "read of our vector \(vector)'s eventfd", socketPath: socketPath, region: nil)
        }
        guard let count = taken else { return nil }
        if !consume {
            do {
                try EventFD.signal(fd, value: count)
            } catch {
                throw IVClientError(error, "write back to our vector \(vector)'s eventfd", socketPath: socketPath, region: nil)
            }
        }
        return count
    }

    /// Handles every message that is there now, and those that come within
    /// `timeout`.
    private func readAnnouncements(timeout: Duration) throws(IVClientError) {
        while true {
            var entry = [pollfd(fd: socket.fd.rawValue, events: Int16(POLLIN), revents: 0)]
            if try poll(&entry, timeout: timeout) == 0 { return }
            try handle(Self.receive(socket))
        }
    }

    private func handle(_ message: (value: Int64, fd: OwnedFD?)) throws(IVClientError) {
        guard let peer = ID(exactly: message.value) else {
            throw fail(.protocolViolation("a message of \(message.value) after the greeting"))
        }
        guard let fd = message.fd else {
            // A departure: its ID without an fd.
            if others.removeValue(forKey: peer) != nil {
                order.removeAll { $0 == peer }
                if announced.remove(peer) != nil { events.append(.left(peer: peer)) }
            }
            return
        }
        do {
            try Posix.setNonBlocking(fd)
        } catch {
            throw IVClientError(error, "fcntl(O_NONBLOCK) on an eventfd", socketPath: socketPath, region: nil)
        }
        if peer == id {
            ownVectors.append(fd)
            return
        }
        if others[peer] == nil { order.append(peer) }
        others[peer, default: []].append(fd)
        // Joined once it has as many vectors as we do (the server gives
        // every peer the same count).
        if !announced.contains(peer), others[peer]!.count >= max(ownVectors.count, 1) {
            announced.insert(peer)
            events.append(.joined(peer: peer, vectors: others[peer]!.count))
        }
    }

    /// One message: 8 bytes, at most one fd. The end of the stream is the
    /// server gone.
    private static func receive(_ socket: ClientSocket) throws(IVClientError) -> (value: Int64, fd: OwnedFD?) {
        let received = try socket.receive(count: 8, maximumFDs: 1, tooManyFDs: "a message carried more than one fd")
        guard received.bytes.count == 8 else {
            throw socket.fail(received.bytes.isEmpty ? .disconnected : .protocolViolation("a message was cut short"))
        }
        return (Int64(littleEndianBytes: received.bytes)!, received.fds.first)
    }
}
