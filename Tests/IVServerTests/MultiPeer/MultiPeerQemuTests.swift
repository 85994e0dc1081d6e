import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// Rings `peer`'s `vector` from `sender` until `receiver` sees it (the
/// sender's QEMU learns of a peer from the server a moment after the
/// server logs the join); then the vectors the receiver got, which must be
/// that one only.
func ringUntilDelivered(from sender: IvshmemDevice, to receiver: IvshmemDevice, peer: UInt32, vector: UInt32,
                        seconds: Double = 10) throws -> [Int] {
    _ = try receiver.deliveredVectors()
    let deadline = monotonicSeconds() + seconds
    var seen: [Int] = []
    repeat {
        try sender.ring(peer: peer, vector: vector)
        seen = try receiver.waitForVectors([Int(vector)], seconds: 0.5)
    } while seen.isEmpty && monotonicSeconds() < deadline
    return Array(Set(seen)).sorted()
}

@Suite("Multi-peer mode with real QEMU VMs (qtest)", .serialized)
struct MultiPeerQemuTests {
    @Test("two VMs: distinct IDs, doorbells both ways, one memory; a third joins after one quits")
    func twoVMsOnOneServer() throws {
        let server = try ServerProcess(multiPeer: ["-n", "4", "-l", "1M"])
        let a = try QemuProcess(qemuSocket: server.peerSocketPath, vectors: 4)
        let deviceA = try IvshmemDevice(qemu: a)
        #expect(server.waitForLog(containing: "peer 0 joined"))
        let b = try QemuProcess(qemuSocket: server.peerSocketPath, vectors: 4)
        let deviceB = try IvshmemDevice(qemu: b)
        #expect(server.waitForLog(containing: "peer 1 joined"))
        let idA = try deviceA.register(IvshmemDevice.ivPosition)
        let idB = try deviceB.register(IvshmemDevice.ivPosition)
        #expect(idA == 0 && idB == 1, "IVPosition: A \(idA), B \(idB)")
        #expect(deviceA.sharedMemorySize == 1 << 20 && deviceB.sharedMemorySize == 1 << 20)

        // A rings B's vector 2: B's MSI-X vector 2 fires, and no other.
        #expect(try ringUntilDelivered(from: deviceA, to: deviceB, peer: idB, vector: 2) == [2])
        #expect(try deviceA.deliveredVectors().isEmpty, "ringing B does not interrupt A")
        // B rings A back on vector 3.
        #expect(try ringUntilDelivered(from: deviceB, to: deviceA, peer: idA, vector: 3) == [3])

        // One memory: written through A's BAR2, read through B's.
        let bytes: [UInt8] = (0..<32).map { UInt8($0 * 7 + 1) }
        try deviceA.qemu.write(IvshmemDevice.sharedMemoryAddress + 0x8_0000, bytes)
        #expect(try deviceB.qemu.read(IvshmemDevice.sharedMemoryAddress + 0x8_0000, count: 32) == bytes)

        // B quits; a third VM, whose device keeps only 2 vectors, gets a new
        // ID (B's is not reused at once), a warning, and A can ring it.
        b.kill()
        #expect(server.waitForLog(containing: "peer 1 left"))
        let c = try QemuProcess(qemuSocket: server.peerSocketPath, vectors: 2)
        let deviceC = try IvshmemDevice(qemu: c)
        #expect(server.waitForLog(containing: "peer 2 joined"))
        let idC = try deviceC.register(IvshmemDevice.ivPosition)
        #expect(idC == 2)
        #expect(server.log.contains("peer 2 (pid \(c.pid)"), "the vector mismatch names the QEMU; log:\n\(server.log)")
        #expect(server.log.contains("vectors=2, the server has 4"))
        #expect(try ringUntilDelivered(from: deviceA, to: deviceC, peer: idC, vector: 1) == [1])
        #expect(try ringUntilDelivered(from: deviceC, to: deviceA, peer: idA, vector: 1) == [1])
        #expect(!c.log.contains("Too many eventfd"), "QEMU was sent only the vectors it keeps; its log:\n\(c.log)")
        #expect(!a.log.contains("Too many eventfd"))
        #expect(try deviceC.qemu.read(IvshmemDevice.sharedMemoryAddress + 0x8_0000, count: 32) == bytes)
        #expect(server.stop() == 0)
    }
}
