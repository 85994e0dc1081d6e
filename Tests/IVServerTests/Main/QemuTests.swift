import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// A second layout whose region sizes are not page multiples (and one that
/// is managed), so BAR2 offsets and padding are exercised off the default.
let unalignedLayoutJSON = layoutJSON(
    regionJSON(name: "\"ring\"", size: "5000", g2h: "{ \"num_nodes_lg2\": 3 }", h2g: "{ \"num_nodes_lg2\": 3 }"),
    regionJSON(name: "\"odd\"", size: "100", g2h: "{ \"num_nodes_lg2\": 0 }", h2g: "{ \"num_nodes_lg2\": 0 }"),
    regionJSON(name: "\"manager\"", size: "4097"),
    regionJSON(name: "\"managed\"", size: "12345", managedBy: "\"manager\"", g2h: "{ \"num_nodes_lg2\": 2 }"))

/// The fds a HALD client holds for each region of a running server.
struct RegionFDs {
    var guestToHost: [OwnedFD] = []
    var hostToGuest: [OwnedFD] = []
    var sharedMemory: OwnedFD?

    init(server: ServerProcess, plan: LayoutPlan) throws {
        for region in plan.regions {
            let reply = try haldHandshake(server.clientSocketPath, region: region.name)
            guard reply.fds.count == 3 else { throw TestFailure("HALD handshake for '\(region.name)' gave \(reply.fds.count) fds") }
            guestToHost.append(reply.fds[0])
            hostToGuest.append(reply.fds[1])
            sharedMemory = reply.fds[2]
        }
    }
}

/// Waits up to `seconds` for an eventfd to become readable; its count.
func waitForEventFD(_ fd: OwnedFD, seconds: Double) throws -> UInt64? {
    var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
    guard poll(&entry, 1, Int32(seconds * 1000)) == 1 else { return nil }
    return try EventFD.drain(fd)
}

func isNonBlocking(_ fd: OwnedFD) -> Bool {
    fcntl(fd.rawValue, F_GETFL) & O_NONBLOCK != 0
}

/// The checks of issue 3 for one VM: what the guest sees and both
/// directions of interrupts, for every region. Messages name the check and
/// the region.
func verifyVM(_ device: IvshmemDevice, server: ServerProcess, plan: LayoutPlan, fds: RegionFDs, label: String,
              checks: Set<Int> = [1, 2, 3, 4, 5]) throws {
    if checks.contains(1) {
        print("[\(label)] check 1: IVPosition and BAR2 size")
        #expect(try device.register(IvshmemDevice.ivPosition) == 1024, "[\(label)] check 1: IVPosition")
        var info = stat()
        stat(server.sharedMemoryPath, &info)
        #expect(device.sharedMemorySize == UInt64(info.st_size), "[\(label)] check 1: BAR2 size")
        #expect(device.sharedMemorySize == UInt64(plan.size), "[\(label)] check 1: BAR2 size vs layout")
    }
    if checks.contains(2) {
        print("[\(label)] check 2: layout header through BAR2")
        let expected = LayoutEncoder.encode(plan)
        let header = try device.qemu.read(IvshmemDevice.sharedMemoryAddress, count: expected.count)
        #expect(Array(header[..<16]) == Array(expected[..<16]), "[\(label)] check 2: layout descriptor")
        for region in plan.regions {
            let range = 16 + 60 * region.index ..< 16 + 60 * (region.index + 1)
            #expect(Array(header[range]) == Array(expected[range]), "[\(label)] check 2: descriptor of region '\(region.name)'")
        }
    }
    if checks.contains(3) {
        print("[\(label)] check 3: zero copy both ways")
        let shm = try #require(fds.sharedMemory)
        for region in [plan.regions.first!, plan.regions.last!] {
            let offset = UInt64(region.beginOffset + region.dataOffset)
            var hostBytes: [UInt8] = (0..<8).map { UInt8(0xA0 + $0 + region.index) }
            #expect(pwrite(shm.rawValue, &hostBytes, 8, off_t(offset)) == 8)
            #expect(try device.qemu.read(IvshmemDevice.sharedMemoryAddress + offset, count: 8) == hostBytes,
                    "[\(label)] check 3: host → guest in region '\(region.name)'")
            let guestOffset = UInt64(region.endOffset) - 8
            let guestBytes: [UInt8] = (0..<8).map { UInt8(0x10 + $0 + region.index) }
            try device.qemu.write(IvshmemDevice.sharedMemoryAddress + guestOffset, guestBytes)
            var fileBytes = [UInt8](repeating: 0, count: 8)
            #expect(pread(shm.rawValue, &fileBytes, 8, off_t(guestOffset)) == 8)
            #expect(fileBytes == guestBytes, "[\(label)] check 3: guest → host in region '\(region.name)'")
        }
    }
    if checks.contains(4) {
        print("[\(label)] check 4: doorbell of every region reaches that region's guest_to_host eventfd")
        for fd in fds.guestToHost { _ = try EventFD.drain(fd) }
        for region in plan.regions {
            try device.ring(peer: 0, vector: UInt32(region.index))
            #expect(try waitForEventFD(fds.guestToHost[region.index], seconds: 5) == 1,
                    "[\(label)] check 4: region '\(region.name)' guest_to_host readable with count 1")
            for other in plan.regions where other.index != region.index {
                #expect(try EventFD.drain(fds.guestToHost[other.index]) == nil,
                        "[\(label)] check 4: doorbell \(region.index) must not fire region '\(other.name)'")
            }
        }
    }
    if checks.contains(5) {
        print("[\(label)] check 5: host_to_guest of every region delivers its MSI-X vector")
        _ = try device.deliveredVectors()
        for region in plan.regions {
            try EventFD.signal(fds.hostToGuest[region.index])
            #expect(try device.waitForVectors([region.index]) == [region.index],
                    "[\(label)] check 5: region '\(region.name)' must deliver exactly MSI-X vector \(region.index)")
        }
    }
}

@Suite("Real QEMU (ivshmem-doorbell over qtest)", .serialized)
struct QemuTests {
    @Test("the default layout: IVPosition, BAR2, header, zero copy, doorbells, MSI-X")
    func defaultLayout() throws {
        let server = try ServerProcess()
        let plan = LayoutLoader.loadDefault()
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        let fds = try RegionFDs(server: server, plan: plan)
        try verifyVM(device, server: server, plan: plan, fds: fds, label: "default layout")
        #expect(!qemu.log.contains("Too many eventfd"))
        #expect(server.stop() == 0)
    }

    @Test("a layout with region sizes that are not page multiples")
    func unalignedLayout() throws {
        let server = try ServerProcess(layoutJSON: unalignedLayoutJSON)
        let plan = try LayoutLoader.load(json: unalignedLayoutJSON.utf8, source: "test")
        #expect(plan.regions.map(\.beginOffset) == [0x1000, 0x3000, 0x4000, 0x6000])
        #expect(plan.size == 0x10000)
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        let fds = try RegionFDs(server: server, plan: plan)
        try verifyVM(device, server: server, plan: plan, fds: fds, label: "unaligned layout")
        #expect(server.stop() == 0)
    }

    @Test("VM lifecycle: a second VM is refused while the first lives; after a kill the next VM is served")
    func lifecycle() throws {
        let server = try ServerProcess()
        let plan = LayoutLoader.loadDefault()
        let fds = try RegionFDs(server: server, plan: plan)
        let first = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let firstDevice = try IvshmemDevice(qemu: first)
        try verifyVM(firstDevice, server: server, plan: plan, fds: fds, label: "first VM", checks: [1, 4, 5])

        print("[lifecycle] check 6: a second QEMU while the first is connected")
        let secondLog = "/tmp/ivs-second-qemu-\(getpid()).log"
        defer { unlink(secondLog) }
        let secondWrapper = try spawn([
            "/usr/bin/timeout", "60", QemuProcess.binary, "-machine", "q35", "-accel", "tcg", "-S", "-display", "none",
            "-nodefaults", "-chardev", "socket,path=\(server.qemuSocketPath),id=ivsh",
            "-device", "ivshmem-doorbell,chardev=ivsh,vectors=\(plan.regionCount)",
        ], logPath: secondLog)
        let second = childPID(of: secondWrapper) ?? secondWrapper
        let secondStatus = waitForExit(secondWrapper, seconds: 30)
        #expect(secondStatus != nil && secondStatus != 0, "check 6: the second QEMU must fail to start, got \(String(describing: secondStatus))")
        #expect(readText(secondLog).contains("server sent version -1, expecting 0"), "check 6: QEMU says why: \(readText(secondLog))")
        #expect(server.waitForLog(containing: "refused a second VM connection (pid \(second)"), "check 6: the refusal names the pid")
        try verifyVM(firstDevice, server: server, plan: plan, fds: fds, label: "first VM after the refusal", checks: [1, 4, 5])

        print("[lifecycle] check 6: kill the first QEMU, start another on the same socket")
        first.kill()
        #expect(server.waitForLog(containing: "VM disconnected (pid \(first.pid)"), "check 6: disconnect logged")
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3, "check 6: still serving clients")
        let third = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let thirdDevice = try IvshmemDevice(qemu: third)
        try verifyVM(thirdDevice, server: server, plan: plan, fds: fds, label: "successor VM", checks: [1, 4, 5])
        #expect(server.stop() == 0)
    }

    @Test("fewer vectors than regions: a warning naming the dead regions, live regions work, no fd turns blocking")
    func fewerVectors() throws {
        let server = try ServerProcess()
        let plan = LayoutLoader.loadDefault()
        let fds = try RegionFDs(server: server, plan: plan)
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: 4)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(device.msixVectors == 4)
        print("[fewer vectors] check 7: warning, live regions, flags")
        #expect(server.waitForLog(containing: "has ivshmem-doorbell vectors=4 but the layout has 8 regions: regions 4...7 "
            + "(e2e_primary, e2e_secondary, e2e_manager, e2e_managed) get no interrupts"))
        #expect(!qemu.log.contains("Too many eventfd"), "QEMU must not have been sent vectors it rejects: \(qemu.log)")
        for region in plan.regions.prefix(4) {
            try device.ring(vector: UInt32(region.index))
            #expect(try waitForEventFD(fds.guestToHost[region.index], seconds: 5) == 1, "check 7: doorbell of live region '\(region.name)'")
            try EventFD.signal(fds.hostToGuest[region.index])
            #expect(try device.waitForVectors([region.index]) == [region.index], "check 7: MSI-X of live region '\(region.name)'")
        }
        for region in plan.regions {
            #expect(isNonBlocking(fds.guestToHost[region.index]) && isNonBlocking(fds.hostToGuest[region.index]),
                    "check 7: region '\(region.name)' eventfds must stay non-blocking")
        }
        #expect(server.stop() == 0)
    }
}
