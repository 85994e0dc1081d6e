import WireFormat
import LinuxSystem
@testable import ServerCore
@testable import MultiPeer
import Glibc
import IVClient
import Testing
@testable import IVServer

/// IVClient.Peer and `ivctl peer` against ivserver's multi-peer mode.
@Suite(.serialized) struct PeerClientTests {
    @Test func twoHostPeersRingEachOtherAndSeeJoinsAndLeaves() throws {
        let server = try ServerProcess(multiPeer: ["-n", "3", "-l", "64K"])
        let a = try Peer.connect(socket: server.peerSocketPath, vectors: 3)
        #expect(a.id == 0 && a.vectorCount == 3 && a.memory.count == 64 << 10)
        #expect(a.peers.isEmpty)
        let b = try Peer.connect(socket: server.peerSocketPath)
        #expect(b.id == 1)
        #expect(b.peers.map(\.id) == [0] && b.peers.map(\.vectors) == [3])
        #expect(try a.nextEvent(timeout: .seconds(5)) == .joined(peer: 1, vectors: 3))

        try b.ring(peer: 0, vector: 2)
        try b.ring(peer: 0, vector: 2)
        // Not consumed: the count stays for the next wait.
        #expect(try a.wait(vector: 2, timeout: .seconds(5), consume: false) == 2)
        #expect(try a.wait(vector: 2, timeout: .seconds(5)) == 2)
        #expect(try a.wait(vector: 2, timeout: .milliseconds(1)) == nil, "the count was taken")
        try a.ring(peer: 1, vector: 0)
        #expect(try b.nextEvent(timeout: .seconds(5)) == .interrupt(vector: 0, count: 1))
        #expect(try a.ringAll() == 3)
        var rung: Set<Int> = []
        while rung.count < 3, let event = try b.nextEvent(timeout: .seconds(5)) {
            if case let .interrupt(vector, _) = event { rung.insert(vector) }
        }
        #expect(rung == [0, 1, 2])

        // One memory.
        try a.memory.write([1, 2, 3, 4], offset: 4096)
        #expect(try b.memory.read(offset: 4096, count: 4) == [1, 2, 3, 4])

        b.close()
        #expect(try a.nextEvent(timeout: .seconds(5)) == .left(peer: 1))
        #expect(a.peers.isEmpty)
        #expect(server.stop() == 0)
    }

    @Test func errorsSayWhatIsWrong() throws {
        let directory = TemporaryDirectory()
        #expect(throws: IVClientError(.socketMissing, socketPath: directory.path + "/none", region: nil)) {
            _ = try Peer.connect(socket: directory.path + "/none")
        }
        let server = try ServerProcess(multiPeer: ["--max-peers", "1", "-n", "2"])
        let only = try Peer.connect(socket: server.peerSocketPath, vectors: 2)
        do {
            _ = try Peer.connect(socket: server.peerSocketPath)
            Issue.record("a peer beyond --max-peers was accepted")
        } catch {
            #expect(error.kind == .refused)
            #expect("\(error)".contains("refused this peer"))
        }
        #expect(throws: IVClientError(.unknownPeer(7, known: [0]), socketPath: server.peerSocketPath, region: nil)) {
            try only.ring(peer: 7, vector: 0)
        }
        do {
            try only.ring(peer: 0, vector: 2)
            Issue.record("vector 2 of 2 was rung")
        } catch {
            #expect(error.kind.isInvalidArgumentForTests)
        }
        #expect(throws: IVClientError.self) { _ = try only.memory.read(offset: Int(PeerServerConfiguration.defaultSize), count: 1) }
        #expect(server.stop() == 0)
        #expect(throws: IVClientError(.disconnected, socketPath: server.peerSocketPath, region: nil)) {
            _ = try only.nextEvent(timeout: .seconds(5))
        }
    }

    @Test func aVMAndIvctlAsPeers() throws {
        let server = try ServerProcess(multiPeer: ["-n", "4", "-l", "1M"])
        let qemu = try QemuProcess(qemuSocket: server.peerSocketPath, vectors: 4)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(server.waitForLog(containing: "peer 0 joined"))
        let vm = try device.register(IvshmemDevice.ivPosition)

        // ivctl peer wait: joins, prints its ID; the VM's Doorbell wakes it.
        let log = "/tmp/ivs-peer-wait-\(getpid()).log"
        defer { unlink(log) }
        let waiter = try spawn([ivctlBinary, "peer", "wait", "-S", server.peerSocketPath, "3", "--timeout", "30"], logPath: log)
        #expect(eventually(seconds: 10) { readText(log).contains("waiting on vector 3") }, "\(readText(log))")
        let hostID = try #require(UInt32(readText(log).dropFirst("peer ".count).prefix { $0 != ":" }))
        #expect(server.waitForLog(containing: "peer \(hostID) joined"))
        var status: Int32?
        let deadline = monotonicSeconds() + 10
        repeat {  // the VM learns of the new peer a moment after the server logs it
            try device.ring(peer: hostID, vector: 3)
            status = waitForExit(waiter, seconds: 0.5)
        } while status == nil && monotonicSeconds() < deadline
        #expect(status == 0, "ivctl peer wait woke on the VM's Doorbell; output: \(readText(log))")
        #expect(readText(log).contains("vector 3: "))

        // ivctl peer ring: the VM's MSI-X vector 2, and no other.
        _ = try device.deliveredVectors()
        let ring = try ivctl(["peer", "ring", "-S", server.peerSocketPath, "\(vm)", "2"])
        #expect(ring.status == 0, "\(ring.errors)")
        #expect(try device.waitForVectors([2]) == [2])

        // Memory written through a host peer's mapping reads back through BAR2.
        let peer = try Peer.connect(socket: server.peerSocketPath)
        try peer.memory.write(Array("from the host".utf8), offset: 0x4_0000)
        #expect(try device.qemu.read(IvshmemDevice.sharedMemoryAddress + 0x4_0000, count: 13) == Array("from the host".utf8))
        let dump = try ivctl(["peer", "dump", "-S", server.peerSocketPath, "--offset", "0x40000", "--length", "16"])
        #expect(dump.status == 0 && dump.output.contains("|from the host"), "\(dump.output)")

        // ivctl peer watch: joins and leaves as lines.
        let watchLog = "/tmp/ivs-peer-watch-\(getpid()).log"
        defer { unlink(watchLog) }
        let watcher = try spawn([ivctlBinary, "peer", "watch", "-S", server.peerSocketPath], logPath: watchLog)
        defer { kill(watcher, SIGKILL); _ = waitForExit(watcher, seconds: 5) }
        #expect(eventually(seconds: 10) { readText(watchLog).contains("watching 4 vectors") }, "\(readText(watchLog))")
        let passer = try Peer.connect(socket: server.peerSocketPath)
        let passerID = passer.id
        #expect(eventually(seconds: 10) { readText(watchLog).contains("peer \(passerID) joined (4 vectors)") }, "\(readText(watchLog))")
        passer.close()
        #expect(eventually(seconds: 10) { readText(watchLog).contains("peer \(passerID) left") }, "\(readText(watchLog))")

        let list = try ivctl(["peer", "list", "-S", server.peerSocketPath])
        #expect(list.status == 0)
        #expect(list.output.contains("shared memory 1048576 bytes, 4 vectors"))
        #expect(list.output.contains("peer \(vm): 4 vectors"), "\(list.output)")
        #expect(server.stop() == 0)
    }

    @Test func ivctlPeerExitCodes() throws {
        let directory = TemporaryDirectory()
        let missing = try ivctl(["peer", "list", "-S", directory.path + "/none"])
        #expect(missing.status == 1 && missing.errors.contains("no such socket"), "\(missing.errors)")
        let server = try ServerProcess(multiPeer: ["-n", "2", "--max-peers", "2"])
        let other = try Peer.connect(socket: server.peerSocketPath)
        let timedOut = try ivctl(["peer", "wait", "-S", server.peerSocketPath, "1", "--timeout", "0.2"])
        #expect(timedOut.status == 2 && timedOut.errors.contains("timed out after 0 of 1"), "\(timedOut.errors)")
        let badPeer = try ivctl(["peer", "ring", "-S", server.peerSocketPath, "999", "0"])
        #expect(badPeer.status == 3 && badPeer.errors.contains("no peer 999"), "\(badPeer.errors)")
        let badVector = try ivctl(["peer", "ring", "-S", server.peerSocketPath, "\(other.id)", "5"])
        #expect(badVector.status == 64 && badVector.errors.contains("no vector 5"), "\(badVector.errors)")
        let usage = try ivctl(["peer", "ring", "-S", server.peerSocketPath])
        #expect(usage.status == 64 && usage.errors.contains("give a peer ID, or --all"))
        let written = try ivctl(["peer", "write", "-S", server.peerSocketPath, "--offset", "0x100", "--hex", "0102"])
        #expect(written.status == 0 && written.output == "wrote 2 bytes at offset 256 of the shared memory\n", "\(written)")
        #expect(try other.memory.read(offset: 256, count: 2) == [1, 2], "the other peer sees the bytes")
        let outside = try ivctl(["peer", "write", "-S", server.peerSocketPath, "--offset", "\(other.memory.count)", "x"])
        #expect(outside.status == 64 && outside.errors.contains("are outside the shared memory"), "\(outside.errors)")
        let blocker = try Peer.connect(socket: server.peerSocketPath)
        let refused = try ivctl(["peer", "list", "-S", server.peerSocketPath])
        #expect(refused.status == 1 && refused.errors.contains("refused this peer"), "\(refused.errors)")
        _ = blocker
        #expect(server.stop() == 0)
    }
}

extension IVClientError.Kind {
    var isInvalidArgumentForTests: Bool {
        if case .invalidArgument = self { return true }
        return false
    }
}
