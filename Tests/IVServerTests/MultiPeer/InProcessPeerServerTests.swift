import WireFormat
import CLinux
import Glibc
import Testing
@testable import IVServer
@testable import LinuxSystem
@testable import MultiPeer
@testable import ServerCore

/// The multi-peer server in-process, with `vectors` per peer and `ids` peer
/// IDs before its counter wraps.
extension InProcess where Served == PeerServer {
    convenience init(vectors: Int = 1, ids: Int = 1 << 16) {
        self.init { directory, events in
            var configuration = PeerServerConfiguration(accessPolicy: AccessPolicy(serverUID: getuid()))
            configuration.socketPath = directory.path + "/peers.sock"
            configuration.memory = .directory(directory.path)
            configuration.size = 1 << 20
            configuration.vectors = vectors
            configuration.peerIDCount = ids
            return PeerServer(configuration: configuration, events: events)
        }
    }

    var socketPath: String { directory.path + "/peers.sock" }
}

@Suite("The multi-peer server in-process", .serialized)
struct InProcessPeerServerTests {
    @Test("started, served and stopped through its API: a peer gets its greeting, then nothing is left")
    func servesAndStops() throws {
        let instance = InProcess<PeerServer>()
        #expect(instance.waitUntilReady())
        let peer = try RawPeer(joining: instance.socketPath, vectors: 1, others: 0)
        #expect(peer.id == 0 && peer.vectors.count == 1)
        let result = instance.finish()
        #expect(throws: Never.self) { try result?.get() }
        #expect(instance.events.contains("stop requested: stopping"))
        #expect(instance.directory.entries() == [], "the socket is gone, the memory was never named")
    }

    @Test("a peer ID reused after the counter wraps gets nothing of the peer that had it: fresh eventfds, its rings not theirs")
    func reusedIDStartsClean() throws {
        // IDs 0, 1 and 2 only: the fourth peer gets a reused one.
        let instance = InProcess<PeerServer>(ids: 3)
        #expect(instance.waitUntilReady())
        let b = try RawPeer(joining: instance.socketPath, vectors: 1, others: 0)
        let a = try RawPeer(joining: instance.socketPath, vectors: 1, others: 1)
        #expect((b.id, a.id) == (0, 1))
        let aAnnounced = try b.read(1)[0]
        let oldA = try #require(aAnnounced.fd)
        #expect(aAnnounced.value == 1)
        // B rings A, which never reads, and A leaves.
        try EventFD.signal(oldA)
        a.socket.close()
        let departure = try b.read(1)[0]
        #expect(departure.value == 1 && departure.fd == nil, "B is told A left")
        let c = try RawPeer(joining: instance.socketPath, vectors: 1, others: 1)
        #expect(c.id == 2)
        _ = try b.read(1)
        // The counter wraps to 0 (B's, in use) and on to 1: A's old ID.
        let d = try RawPeer(joining: instance.socketPath, vectors: 1, others: 2)
        #expect(d.id == 1, "the ID A had")
        let dOwn = try #require(d.vectors.first)
        #expect(try EventFD.drain(dOwn) == nil, "D's vector does not carry the ring meant for A")
        let dAnnounced = try b.read(1)[0]
        let newD = try #require(dAnnounced.fd)
        #expect(dAnnounced.value == 1)
        #expect(!sameOpenFile(newD, oldA), "B is given D's own eventfd for ID 1, not A's again")
        try EventFD.signal(oldA)
        #expect(try EventFD.drain(dOwn) == nil, "ringing A's old eventfd does not reach D")
        try EventFD.signal(newD)
        #expect(try EventFD.drain(dOwn) == 1, "ringing what B was told of ID 1 now reaches D")
        #expect(throws: Never.self) { try instance.finish()?.get() }
        _ = c
    }
}

/// Whether two fds are the same open file (kcmp).
func sameOpenFile(_ a: OwnedFD, _ b: OwnedFD) -> Bool {
    ivs_same_open_file(a.rawValue, b.rawValue) == 0
}
