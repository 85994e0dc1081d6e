import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer

/// The signal tables end to end: IVClient on the host, the real QEMU's
/// ivshmem-doorbell device driven over qtest playing the guest driver.
@Suite("Host client library with a real QEMU", .serialized)
struct ClientQemuTests {
    @Test("guest → host signals reach the worker and wake futex waiters; host → guest signals land in BAR2 with MSI-X")
    func signalTablesEndToEnd() throws {
        let server = try ServerProcess()
        let plan = LayoutLoader.loadDefault()
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        let host = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let waiterSide = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let vector = UInt32(host.regionIndex)
        // e2e_primary: guest_to_host 2 slots at 0, word at 8; host_to_guest 2 slots at 12, word at 20
        let region = IvshmemDevice.sharedMemoryAddress + UInt64(host.descriptor.beginOffset)
        #expect(host.descriptor.guestToHost == .init(nodesLg2: 1, tableOffset: 0, signalledOffset: 8))
        #expect(host.descriptor.hostToGuest == .init(nodesLg2: 1, tableOffset: 12, signalledOffset: 20))

        let handled = Shared<[UInt32]>([])
        let worker = try host.startWorker { offset in handled.update { $0.append(offset) } }
        let waiter = Shared<Result<FutexWaitResult, IVClientError>?>(nil)
        let waiterID = Shared<pid_t?>(nil)
        let waiterThread = TestThread {
            waiterID.update { $0 = currentThreadID() }
            let result = Result { () throws(IVClientError) in try waiterSide.wait(offset: 32, expected: 0, timeout: .seconds(20)) }
            waiter.update { $0 = result }
        }
        // The guest signals only once the waiter sleeps on the word.
        #expect(waitUntilSleeping(waiterID, in: BlockingCall.futex), "the waiter never slept on the futex")

        print("[signal tables] guest → host: offset 32 in slot 0, signal word, doorbell")
        try qemu.session.writel(region + 0, 32)
        try qemu.session.writel(region + 8, 1)
        try device.ring(peer: 0, vector: vector)
        #expect(eventually { handled.value == [32] }, "the worker's handler got offset 32, got \(handled.value)")
        waiterThread.join()
        #expect(try waiter.value?.get() == .woken, "the futex waiter on word 32 was woken")
        #expect(try qemu.session.readl(region + 0) == 0, "the entry was taken")
        #expect(try qemu.session.readl(region + 8) == 0, "interrupt_signalled was cleared")

        print("[signal tables] guest → host with a round trip: 36 | 1 in slot 1")
        _ = try device.deliveredVectors()
        try qemu.session.writel(region + 4, 36 | 1)
        try qemu.session.writel(region + 8, 1)
        try device.ring(peer: 0, vector: vector)
        #expect(eventually { handled.value == [32, 36] })
        #expect(try device.waitForVectors([Int(vector)]) == [Int(vector)], "the round trip interrupts the guest on vector \(vector)")
        #expect(try qemu.session.readl(region + 12 + 4) == 36, "36 came back in host_to_guest slot (36 >> 2) & 1 = 1")
        #expect(try qemu.session.readl(region + 20) == 1, "host_to_guest interrupt_signalled raised")

        print("[signal tables] host → guest: sendSignal(40) after the guest drained its table")
        for offset: UInt64 in [12, 16, 20] { try qemu.session.writel(region + offset, 0) }
        try host.sendSignal(offset: 40)
        #expect(try qemu.session.readl(region + 12) == 40, "40 in host_to_guest slot (40 >> 2) & 1 = 0, seen through BAR2")
        #expect(try qemu.session.readl(region + 20) == 1)
        #expect(try device.waitForVectors([Int(vector)]) == [Int(vector)], "MSI-X vector \(vector) delivered")
        try host.sendSignal(offset: 44)
        #expect(try device.waitForVectors([]) == [], "no second interrupt while interrupt_signalled is 1")

        try worker.stop()
        #expect(server.stop() == 0)
    }
}
