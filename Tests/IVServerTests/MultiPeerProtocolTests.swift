import LinuxSystem
@testable import ServerCore
@testable import MultiPeer
import WireFormat
import Glibc
import Testing
@testable import IVServer

/// The multi-peer protocol's message plans and ID rule, without I/O.
struct MultiPeerPlanTests {
    typealias Message = PeerProtocol.Message

    @Test func greetingListsOthersThenOwnVectors() {
        let greeting = PeerProtocol.greeting(for: 7, others: [3, 5], vectors: 2)
        #expect(greeting == [
            Message(value: 0), Message(value: 7), Message(value: -1, attachment: .sharedMemory),
            Message(value: 3, attachment: .vector(peer: 3, vector: 0)), Message(value: 3, attachment: .vector(peer: 3, vector: 1)),
            Message(value: 5, attachment: .vector(peer: 5, vector: 0)), Message(value: 5, attachment: .vector(peer: 5, vector: 1)),
            Message(value: 7, attachment: .vector(peer: 7, vector: 0)), Message(value: 7, attachment: .vector(peer: 7, vector: 1)),
        ])
        #expect(greeting[2].payload == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(greeting[1].payload == [7, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func aDeviceWithFewerVectorsGetsOnlyThose() {
        let greeting = PeerProtocol.greeting(for: 1, others: [0], vectors: 4, kept: 2)
        #expect(greeting.count == 3 + 2 + 2)
        #expect(greeting.compactMap(\.attachment).filter { if case .vector(_, let v) = $0 { return v >= 2 } else { return false } }.isEmpty)
        #expect(PeerProtocol.announcement(of: 9, vectors: 4, kept: 2).count == 2)
        #expect(PeerProtocol.announcement(of: 9, vectors: 4, kept: 8).count == 4)
        #expect(PeerProtocol.departure(of: 9) == Message(value: 9))
    }

    @Test func idsMoveOnAndSkipThoseInUse() {
        var ids = PeerIDAllocator()
        #expect(ids.allocate() == 0)
        #expect(ids.allocate() == 1)
        ids.release(0)
        // A freed ID is not handed out again at once.
        #expect(ids.allocate() == 2)
        ids.release(1)
        ids.release(2)
        #expect(ids.allocate() == 3)
    }

    @Test func idsWrapAndNoneIsLeftWhenAllAreInUse() {
        var ids = PeerIDAllocator()
        for expected in 0...65535 { #expect(ids.allocate() == UInt16(expected)) }
        #expect(ids.allocate() == nil)
        ids.release(40)
        ids.release(7)
        // The counter wrapped to 0 and skips IDs in use up to the first free one.
        #expect(ids.allocate() == 7)
        #expect(ids.allocate() == 40)
        #expect(ids.allocate() == nil)
    }

    @Test func sizesTakeQemuSuffixes() {
        #expect(MemorySize.parse("4M") == 4 << 20)
        #expect(MemorySize.parse("512k") == 512 << 10)
        #expect(MemorySize.parse("1G") == 1 << 30)
        #expect(MemorySize.parse("4096") == 4096)
        #expect(MemorySize.parse("") == nil)
        #expect(MemorySize.parse("M") == nil)
        #expect(MemorySize.parse("0") == nil)
        #expect(MemorySize.parse("-4M") == nil)
        #expect(MemorySize.parse("4X") == nil)
        #expect(MemorySize.parse("99999999999T") == nil)
        #expect(MemorySize.describe(4 << 20) == "4 MiB")
        #expect(MemorySize.describe(1000) == "1000 bytes")
    }

    @Test func posixNamesAreChecked() {
        #expect(MemoryLocation.problem(withPosixName: "ivshmem") == nil)
        #expect(MemoryLocation.problem(withPosixName: "/ivshmem") == nil)
        #expect(MemoryLocation.posixName("/ivshmem").path == "/dev/shm/ivshmem")
        #expect(MemoryLocation.problem(withPosixName: "a/b") != nil)
        #expect(MemoryLocation.problem(withPosixName: "/") != nil)
        #expect(MemoryLocation.problem(withPosixName: "..") != nil)
    }
}

/// A peer of the multi-peer server as a raw protocol client sees it.
final class RawPeer {
    let socket: OwnedFD
    private(set) var id: Int64 = -1
    private(set) var sharedMemory: OwnedFD?
    /// Its own eventfds, in vector order.
    private(set) var vectors: [OwnedFD] = []

    /// Connects without reading anything.
    init(connectingTo path: String) throws {
        socket = try connectClient(path)
    }

    /// Connects and reads the greeting for `vectors` vectors and `others` peers.
    convenience init(joining path: String, vectors: Int, others: Int?) throws {
        try self.init(connectingTo: path)
        try readGreeting(vectors: vectors, others: others)
    }

    func read(_ count: Int) throws -> [QemuMessageReceived] {
        try readQemuMessages(socket, count: count)
    }

    /// Reads and checks the greeting: version 0, an ID, -1 with the memory,
    /// `others` × `vectors` messages with fds, then its own `vectors`.
    /// Returns the other peers' eventfds by ID.
    @discardableResult
    func readGreeting(vectors: Int, others: Int?) throws -> [Int64: [OwnedFD]] {
        let head = try read(3)
        #expect(head[0].value == 0 && head[0].fd == nil, "version 0, no fd")
        #expect(head[1].fd == nil, "the ID has no fd")
        id = head[1].value
        #expect(head[2].value == -1 && head[2].fd != nil, "-1 with the shared memory")
        sharedMemory = head[2].fd
        var byPeer: [Int64: [OwnedFD]] = [:]
        // Others not known in advance: read up to the first own vector.
        var ownFirst: QemuMessageReceived?
        while others.map({ byPeer.values.reduce(0) { $0 + $1.count } < $0 * vectors }) ?? (ownFirst == nil) {
            let message = try read(1)[0]
            if others == nil && message.value == id {
                ownFirst = message
                break
            }
            #expect(message.fd.map(fdTarget) == "anon_inode:[eventfd]", "peer \(message.value)'s vector comes with an eventfd")
            #expect(message.value != id)
            byPeer[message.value, default: []].append(message.fd ?? OwnedFD(taking: dup(0)))
        }
        #expect(byPeer.values.allSatisfy { $0.count == vectors })
        for message in (ownFirst.map { [$0] } ?? []) + (try read(vectors - (ownFirst == nil ? 0 : 1))) {
            #expect(message.value == id, "own vectors last")
            if let fd = message.fd { self.vectors.append(fd) }
        }
        #expect(self.vectors.count == vectors)
        return byPeer
    }
}

/// The multi-peer mode over its socket, with raw clients (the real binary).
@Suite(.serialized) struct MultiPeerServerTests {
    @Test func joinsAndLeavesAreAnnouncedInOrder() throws {
        let server = try ServerProcess(multiPeer: ["-n", "2", "-l", "1M"])
        let a = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 0)
        #expect(a.id == 0)
        #expect(sameFile(try #require(a.sharedMemory), server.sharedMemoryObjectPath))
        var info = stat()
        fstat(try #require(a.sharedMemory).rawValue, &info)
        #expect(info.st_size == 1 << 20)

        let b = try RawPeer(connectingTo: server.peerSocketPath)
        let bSees = try b.readGreeting(vectors: 2, others: 1)
        #expect(b.id == 1)
        // What B got for A is A's own eventfds, vector by vector.
        let aForB = try #require(bSees[0])
        for vector in 0..<2 { #expect(try sameEventFD(aForB[vector], a.vectors[vector]), "B rings A's vector \(vector)") }
        // A is told of B: its ID twice, with B's own eventfds.
        let join = try a.read(2)
        #expect(join.map(\.value) == [1, 1])
        for vector in 0..<2 { #expect(try sameEventFD(try #require(join[vector].fd), b.vectors[vector])) }

        // B leaves: A gets B's ID with no fd.
        b.socket.close()
        let leave = try a.read(1)
        #expect(leave[0].value == 1 && leave[0].fd == nil)
        #expect(server.waitForLog(containing: "peer 1 left"))
        // The next peer gets a new ID, not B's.
        let c = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 1)
        #expect(c.id == 2)
        #expect(try a.read(2).map(\.value) == [2, 2])
        #expect(server.stop() == 0)
        #expect(!fileExists(server.sharedMemoryObjectPath), "the shared-memory object is removed")
        #expect(!fileExists(server.peerSocketPath), "the socket is removed")
    }

    /// A peer whose greeting is still going out when it hangs up is never
    /// announced: the others' next message is the next real join.
    @Test func aPeerThatLeavesMidGreetingIsAnnouncedToNobody() throws {
        // 20 peers of 64 vectors: a greeting of 1,347 messages with fds,
        // far more than a socket buffer holds, so it cannot all go out
        // while the newcomer reads nothing.
        let server = try ServerProcess(multiPeer: ["-n", "64", "-l", "64K"])
        let watcher = try RawPeer(joining: server.peerSocketPath, vectors: 64, others: 0)
        var others: [RawPeer] = []
        for index in 1..<20 {
            others.append(try RawPeer(joining: server.peerSocketPath, vectors: 64, others: index))
            #expect(try watcher.read(64).allSatisfy { $0.value == Int64(index) && $0.fd != nil })
            // The ones already there are told too; nobody reads theirs: fine.
        }
        let leaver = try RawPeer(connectingTo: server.peerSocketPath)
        leaver.socket.close()
        #expect(server.waitForLog(containing: "peer 20 left"), "the server saw it go; log:\n\(server.log)")
        #expect(server.log.contains("nobody was told of it"))
        let next = try RawPeer(joining: server.peerSocketPath, vectors: 64, others: 20)
        #expect(next.id == 21)
        let seen = try watcher.read(64)
        #expect(seen.allSatisfy { $0.value == 21 && $0.fd != nil }, "the watcher's next messages are peer 21's join, not 20's departure")
        #expect(server.stop() == 0)
    }

    @Test func aPeerThatNeverReadsIsDroppedAndTheOthersAreServed() throws {
        let server = try ServerProcess(multiPeer: ["--max-queued-messages", "50"])
        let watcher = try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 0)
        let silent = try RawPeer(connectingTo: server.peerSocketPath)  // peer 1, never reads
        #expect(try watcher.read(1).map(\.value) == [1])
        // Joins and leaves until the silent peer's socket buffer and then
        // its queue are full: each costs it two messages. The watcher reads
        // all of its own as they come.
        var cycles = 0
        var departed = false
        while !departed, cycles < 2000 {
            // (Once the silent peer is gone, a passer is told of the watcher only.)
            let passer = try RawPeer(joining: server.peerSocketPath, vectors: 1, others: nil)
            passer.socket.close()
            cycles += 1
            var passerLeft = false
            while !passerLeft {
                let message = try watcher.read(1)[0]
                passerLeft = message.value == passer.id && message.fd == nil
                if message.value == 1 && message.fd == nil { departed = true }
            }
        }
        // The drop may have come with the last passer's departure.
        if !departed {
            let message = try watcher.read(1)[0]
            departed = message.value == 1 && message.fd == nil
        }
        #expect(departed, "the watcher is told the silent peer left (after \(cycles) join/leave cycles)")
        #expect(server.log.contains("dropped peer 1"), "log tail:\n\(server.log.suffix(800))")
        #expect(server.log.contains("more than --max-queued-messages 50"))
        #expect(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 1).id > 1)
        _ = silent
        #expect(server.stop() == 0)
    }

    @Test func beyondMaxPeersANewcomerIsRefusedClearly() throws {
        let server = try ServerProcess(multiPeer: ["--max-peers", "3"])
        var peers: [RawPeer] = []
        for index in 0..<3 { peers.append(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: index)) }
        let refused = try RawPeer(connectingTo: server.peerSocketPath)
        let reply = try receiveExactly(refused.socket, count: 16, maximumFDs: 2)
        #expect(reply.bytes == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "version -1, then the end")
        #expect(reply.fds.isEmpty)
        #expect(server.waitForLog(containing: "3 peers are connected (--max-peers 3)"))
        // When one leaves, there is room again.
        peers.removeLast().socket.close()
        #expect(server.waitForLog(containing: "peer 2 left"))
        #expect(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 2).id == 3)
        #expect(server.stop() == 0)
    }

    /// 1,000 peers at once (QEMU's server aborts at about 114), each told
    /// of every other: about a million messages with fds.
    @Test func aThousandPeersAtOnce() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 && limit.rlim_max >= 4096 {
            limit.rlim_cur = min(limit.rlim_max, 8192)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let count = 1000
        let server = try ServerProcess(multiPeer: ["--max-peers", "\(count)"])
        /// What one peer has received so far.
        struct Received {
            var partial: [UInt8] = []
            var partialHasFD = false
            var messages = 0
            var id: Int64?
            var others = Set<Int64>()
        }
        var sockets: [OwnedFD] = []
        var received: [Received] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
        defer { buffer.deallocate() }
        /// Reads what the peers have, without waiting: the 2nd message is a
        /// peer's ID, and after the memory every message with an fd whose
        /// value is not its own ID tells it of another peer.
        func drain() throws {
            var entries = sockets.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            guard poll(&entries, nfds_t(entries.count), 1) > 0 else { return }
            for (index, entry) in entries.enumerated() where entry.revents != 0 {
                while true {
                    var peer = received[index]
                    let wanted = 8 - peer.partial.count
                    let result = try UnixSocket.receive(sockets[index], into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), maximumFDs: 2)
                    guard case let .data(count, fds, _) = result else { break }
                    if !fds.isEmpty { peer.partialHasFD = true }
                    fds.forEach { $0.close() }
                    peer.partial += buffer[..<count]
                    if peer.partial.count == 8 {
                        let value = peer.partial.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
                        peer.messages += 1
                        if peer.messages == 2 {
                            peer.id = value
                        } else if peer.messages > 3, peer.partialHasFD, value != peer.id {
                            peer.others.insert(value)
                        }
                        peer.partial = []
                        peer.partialHasFD = false
                    }
                    received[index] = peer
                }
            }
        }
        for _ in 0..<count {
            let socket = try UnixSocket.connect(path: server.peerSocketPath)
            _ = fcntl(socket.rawValue, F_SETFL, fcntl(socket.rawValue, F_GETFL) | O_NONBLOCK)
            sockets.append(socket)
            received.append(Received())
            try drain()
        }
        let deadline = monotonicSeconds() + 120
        while received.contains(where: { $0.others.count < count - 1 }), monotonicSeconds() < deadline { try drain() }
        #expect(Set(received.compactMap(\.id)).count == count, "every peer got its own ID")
        let short = received.filter { $0.others.count != count - 1 }
        #expect(short.isEmpty, "\(short.count) peers were not told of all \(count - 1) others, e.g. \(short.prefix(3).map(\.others.count))")
        let refused = try RawPeer(connectingTo: server.peerSocketPath)
        #expect(try receiveExactly(refused.socket, count: 16, maximumFDs: 2).bytes == [UInt8](repeating: 0xFF, count: 8))
        #expect(server.stop() == 0)
    }
}
