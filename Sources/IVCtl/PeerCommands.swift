import ArgumentParser
import IVClient
import LinuxSystem

/// `ivctl peer …`: join a multi-peer ivshmem server (`ivserver multi-peer`,
/// QEMU's ivshmem-server protocol) as a peer, scriptably.
struct PeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Join a multi-peer ivshmem server (ivserver multi-peer, ivshmem-server) as a peer: list, ring, wait, watch, dump, write.",
        discussion: """
            Each command connects as a new peer (it gets an ID of its own, which the \
            other peers are told of, and leaves when it ends). A peer rings peer P's \
            vector V as a guest does by writing (P << 16) | V to its Doorbell. Exit \
            codes as for the other commands; 3 is a peer ID that is not connected.
            """,
        subcommands: [PeerList.self, PeerRing.self, PeerWait.self, PeerWatch.self, PeerDump.self, PeerWrite.self])
}

struct PeerServerOptions: ParsableArguments {
    @Option(name: [.customShort("S"), .customLong("socket")], help: ArgumentHelp("The multi-peer server's socket.", valueName: "path"))
    var socket = Peer.defaultSocketPath

    @Option(name: .customLong("handshake-timeout"), help: ArgumentHelp("Seconds to wait for the server's greeting.", valueName: "seconds"))
    var handshakeTimeout = 5.0

    @Option(name: [.customShort("n"), .customLong("vectors")], help: ArgumentHelp(
        "The server's vectors per peer (its -n): wait for that many of ours. Without it, as many as the other peers have; when no other peer is connected, those that arrive with the greeting.",
        valueName: "count"))
    var vectors: Int?

    func validate() throws {
        guard handshakeTimeout > 0, handshakeTimeout.isFinite else {
            throw ValidationError("--handshake-timeout must be a positive number of seconds")
        }
        if let vectors, vectors < 1 { throw ValidationError("--vectors must be at least 1") }
    }

    func join() throws -> Peer {
        try reportPeer { () throws(IVClientError) in
            try Peer.connect(socket: socket, vectors: vectors, timeout: SystemTime.duration(seconds: handshakeTimeout))
        }
    }
}

/// `report`, with an unknown peer as exit code 3.
func reportPeer<Result>(_ body: () throws(IVClientError) -> Result) throws -> Result {
    do {
        return try body()
    } catch {
        Output.error("ivctl: \(error)")
        if case .unknownPeer = error.kind { throw Exit.unknownRegion }
        if case .invalidArgument = error.kind { throw Exit.usage }
        throw Exit.failure
    }
}

struct PeerList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Print this peer's ID, the memory's size and vectors, and every other peer with its vector count.")

    @OptionGroup var server: PeerServerOptions

    @Flag(help: "Print one JSON object (version, socket, id, shared_memory_size, vectors, peers: [{id, vectors}]) instead of the lines.")
    var json = false

    func run() throws {
        let peer = try server.join()
        if json { return JSONOutput.print(JSONOutput.peers(peer, socket: server.socket)) }
        var lines = ["peer \(peer.id) (this one) at \(server.socket): shared memory \(peer.memory.count) bytes, \(peer.vectorCount) vectors"]
        lines += peer.peers.map { "peer \($0.id): \($0.vectors) vectors" }
        if peer.peers.isEmpty { lines.append("no other peers") }
        Output.lines(lines)
    }
}

struct PeerRing: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ring",
        abstract: "Interrupt a peer on a vector (or on all its vectors), or every other peer with --all.")

    @OptionGroup var server: PeerServerOptions

    @Argument(help: "The peer's ID (not with --all).")
    var peer: UInt16?

    @Argument(help: "The vector (default: all of them).")
    var vector: Int?

    @Flag(help: "Every other peer.")
    var all = false

    func validate() throws {
        if all == (peer != nil) { throw ValidationError("give a peer ID, or --all") }
        if all, vector != nil { throw ValidationError("with --all, give the vector with --vector") }
        if let vector, vector < 0 { throw ValidationError("a vector is 0 or more") }
        if let allVector, allVector < 0 { throw ValidationError("a vector is 0 or more") }
    }

    @Option(name: .customLong("vector"), help: ArgumentHelp("With --all: only this vector.", valueName: "n"))
    var allVector: Int?

    func run() throws {
        let joined = try server.join()
        try reportPeer { () throws(IVClientError) in
            if all {
                let rung = try joined.ringAll(vector: allVector)
                Output.lines(["rang \(rung) vector(s) of \(joined.peers.count) peer(s)"])
            } else if let peer {
                let vectors: [Int]
                if let vector { vectors = [vector] } else { vectors = Array(0..<(try joined.vectorCount(of: peer))) }
                for index in vectors { try joined.ring(peer: peer, vector: index) }
                Output.lines(["rang peer \(peer) on vector\(vectors.count == 1 ? "" : "s") \(vectors.map(String.init).joined(separator: ", "))"])
            }
        }
    }
}

struct PeerWait: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Join and wait for interrupts on one of this peer's vectors; print each wake-up with its count.",
        discussion: "The peer's ID is printed first (other peers ring it with (ID << 16) | vector), so a script can read it and hand it on.")

    @OptionGroup var server: PeerServerOptions

    @Argument(help: "This peer's vector to wait on.")
    var vector = 0

    @Option(help: ArgumentHelp("Give up after this many seconds (exit code 2).", valueName: "seconds"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Stop once this many interrupts were counted.", valueName: "n"))
    var count = 1

    func validate() throws {
        if let timeout, !(timeout >= 0 && timeout.isFinite) { throw ValidationError("--timeout must be a number of seconds >= 0") }
        if count < 1 { throw ValidationError("--count must be at least 1") }
        if vector < 0 { throw ValidationError("a vector is 0 or more") }
    }

    func run() throws {
        let peer = try server.join()
        Output.lines(["peer \(peer.id): waiting on vector \(vector)"])
        try countInterrupts(count, timeout: timeout, label: "vector \(vector)", failureSubject: "peer \(peer.id), vector \(vector)") { left in
            try reportPeer { () throws(IVClientError) in try peer.wait(vector: vector, timeout: left) }
        }
    }
}

struct PeerWatch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Join and print a line per interrupt on this peer's vectors, per join and per leave, until Ctrl-C.")

    @OptionGroup var server: PeerServerOptions

    func run() throws {
        let peer = try server.join()
        let others = peer.peers.map { "\($0.id)" }.joined(separator: ", ")
        Output.lines(["peer \(peer.id): watching \(peer.vectorCount) vectors at \(server.socket); peers: \(others.isEmpty ? "none" : others)"])
        while true {
            let event = try reportPeer { () throws(IVClientError) in try peer.nextEvent(timeout: nil) }
            switch event {
            case let .interrupt(vector, count)?: Output.lines(["vector \(vector): \(count) interrupt\(count == 1 ? "" : "s")"])
            case let .joined(other, vectors)?: Output.lines(["peer \(other) joined (\(vectors) vectors)"])
            case let .left(other)?: Output.lines(["peer \(other) left"])
            case nil: break
            }
        }
    }
}

struct PeerDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Hexdump the shared memory (hexdump -C style; repeated lines become '*').")

    @OptionGroup var server: PeerServerOptions

    @Option(parsing: .unconditional, help: ArgumentHelp("First byte (default: 0).", valueName: "n"), transform: ByteValue.parse)
    var offset = ByteValue(0)

    @Option(parsing: .unconditional, help: ArgumentHelp("How many bytes (default: to the end).", valueName: "n"), transform: ByteValue.parse)
    var length: ByteValue?

    func run() throws {
        let peer = try server.join()
        let size = peer.memory.count
        let start = offset.value
        let count = length?.value ?? max(size - start, 0)
        guard start <= size, count <= size - start else {
            Output.error("ivctl: bytes \(start)..<\(start + count) are outside the shared memory (\(size) bytes)")
            throw Exit.usage
        }
        var dump = HexDump(startOffset: start)
        var position = 0
        while position < count {
            let wanted = min(1 << 20, count - position)
            let chunk = try reportPeer { () throws(IVClientError) in try peer.memory.readFromFile(offset: start + position, count: wanted) }
            Output.text(dump.feed(chunk))
            position += wanted
        }
        Output.text(dump.finish())
    }
}
