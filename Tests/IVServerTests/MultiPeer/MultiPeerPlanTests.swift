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
