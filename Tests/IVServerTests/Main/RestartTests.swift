import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer

/// A restart under a service manager keeps the VM and its host clients
/// together: the fd store, and the adoption of what it hands back.
@Suite("Restart without separating the VM", .serialized)
struct RestartTests {
    let plan = LayoutLoader.loadDefault()

    var expectedStore: Set<String> { storedNames(of: plan, listeners: true) }

    func inode(_ fd: OwnedFD) -> UInt64 {
        var info = stat()
        return fstat(fd.rawValue, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test("LISTEN_FDS is read as sd_listen_fds_with_names does")
    func handedDescriptors() {
        let names = HandedDescriptors.parse(ownPID: 42, listenPID: "42", count: "3", names: "a:b")
        #expect(names.map(\.fd) == [3, 4, 5])
        #expect(names.map(\.name) == ["a", "b", "unknown"])
        #expect(HandedDescriptors.parse(ownPID: 42, listenPID: "41", count: "3", names: "a:b:c").isEmpty, "meant for another process")
        #expect(HandedDescriptors.parse(ownPID: 42, listenPID: nil, count: "3", names: nil).isEmpty)
        #expect(HandedDescriptors.parse(ownPID: 42, listenPID: "42", count: "x", names: nil).isEmpty)
        #expect(HandedDescriptors.parse(ownPID: 42, listenPID: "42", count: "0", names: nil).isEmpty)
    }

    @Test("under a service manager: the memory, every eventfd and both listeners are stored; the VM's connection while attached")
    func storesWhatTheVMHolds() throws {
        let manager = try FakeServiceManager()
        let server = try ServerProcess(manager: manager)
        #expect(try manager.waitFor("READY=1"))
        #expect(try manager.waitForStore(expectedStore))
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        #expect(try manager.waitForStore(expectedStore.union([Handover.vm])), "the VM's connection is stored")
        let stored = try #require(manager.stored.first { $0.name == Handover.sharedMemory })
        #expect(inode(stored.fd) == inode(vm.sharedMemory), "the same memory as the VM's")
        vm.socket.close()
        #expect(try manager.waitForStore(expectedStore), "and taken out when the VM leaves")
        // a stop keeps the files for the next server process (the manager's
        // runtime directory goes when the unit stops for good)
        #expect(server.stop() == 0)
        #expect(access(server.sharedMemoryPath, F_OK) == 0 && access(server.clientSocketPath, F_OK) == 0)
    }

    @Test("SIGKILL, then a relaunch with the stored fds: a real VM keeps its memory, eventfds and connection; a new host client reaches it")
    func crashRestartWithRealQemu() throws {
        let manager = try FakeServiceManager()
        let server = try ServerProcess(manager: manager)
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(try manager.waitForStore(expectedStore.union([Handover.vm])))
        let position = try device.register(IvshmemDevice.ivPosition)
        let first = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let memoryInode = inode(first.sharedMemory)

        #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
        let restarted = try ServerProcess(directory: server.directory, manager: manager, handing: manager.handBack())
        #expect(restarted.log.contains("resumed what the previous server process handed over: shared memory inode \(memoryInode), "
            + "\(2 * plan.regionCount) eventfds, 2 listening socket(s), the VM's connection (pid \(qemu.pid))"), "\(restarted.log)")
        #expect(restarted.log.contains("VM still attached"))
        #expect(!restarted.log.contains("removed"), "nothing was replaced")

        let client = try RegionConnection.open(region: "e2e_primary", socket: restarted.clientSocketPath)
        #expect(inode(client.sharedMemory) == memoryInode, "the same memory")
        let region = try #require(plan.regions.first { $0.name == "e2e_primary" })
        let data = UInt64(client.descriptor.beginOffset + client.descriptor.dataOffset)
        try client.memory.write(Array("after the restart".utf8), offset: Int(client.descriptor.dataOffset))
        #expect(try qemu.session.read(IvshmemDevice.sharedMemoryAddress + data, count: 17) == Array("after the restart".utf8))
        try qemu.session.write(IvshmemDevice.sharedMemoryAddress + data + 64, Array("from the guest".utf8))
        #expect(try client.memory.read(offset: Int(client.descriptor.dataOffset) + 64, count: 14) == Array("from the guest".utf8))
        _ = try device.deliveredVectors()
        #expect(try client.interruptGuest())
        #expect(try device.waitForVectors([region.index]) == [region.index], "host → guest MSI-X")
        try device.ring(peer: 0, vector: UInt32(region.index))
        #expect(try client.waitForGuest(timeout: .seconds(5)) != nil, "the guest's Doorbell reaches the client")
        #expect(try device.register(IvshmemDevice.ivPosition) == position, "IVPosition unchanged")
        #expect(kill(qemu.pid, 0) == 0, "QEMU is still running")
        #expect(qemu.log.isEmpty, "QEMU said nothing (no disconnect): \(qemu.log)")
        #expect(restarted.stop() == 0)
    }

    @Test("SIGUSR2 re-executes the binary in place: same pid, a real VM keeps its memory, eventfds and connection")
    func reexecInPlace() throws {
        let server = try ServerProcess()
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(server.waitForLog(containing: "VM connected"))
        let first = try RegionConnection.open(region: "hwcomposer", socket: server.clientSocketPath)
        let memoryInode = inode(first.sharedMemory)
        kill(server.pid, SIGUSR2)
        #expect(server.waitForLog(containing: "resumed what the previous server process handed over: shared memory inode \(memoryInode), "
            + "\(2 * plan.regionCount) eventfds, 2 listening socket(s), the VM's connection (pid \(qemu.pid))"), "\(server.log)")
        #expect(server.log.components(separatedBy: "ready:").count == 3, "ready again, in the same process")
        #expect(kill(server.pid, 0) == 0)
        let client = try RegionConnection.open(region: "hwcomposer", socket: server.clientSocketPath)
        #expect(inode(client.sharedMemory) == memoryInode)
        _ = try device.deliveredVectors()
        #expect(try client.interruptGuest())
        #expect(try device.waitForVectors([0]) == [0], "host → guest MSI-X")
        try device.ring(peer: 0, vector: 0)
        #expect(try client.waitForGuest(timeout: .seconds(5)) != nil, "the guest's Doorbell reaches the client")
        #expect(qemu.log.isEmpty, "QEMU saw nothing: \(qemu.log)")
        #expect(server.stop() == 0)
        #expect(server.directory.entries() == [], "a stop after the re-exec still cleans up")
    }

    @Test("SIGUSR2 when the binary cannot be executed: one error line, and the server serves on as it was")
    func reexecFails() throws {
        let directory = TemporaryDirectory()
        let binary = directory.path + "/ivserver-copy"
        let copy = try runTool(["/bin/cp", ivserverBinary, binary])
        #expect(copy.status == 0)
        let logPath = directory.path + "/log"
        let pid = try spawn([binary, "--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/q.sock",
                             "--client-sock", directory.path + "/c.sock"], logPath: logPath)
        var exited = false
        defer { if !exited { kill(pid, SIGKILL); _ = waitForExit(pid, seconds: 10) } }
        #expect(eventually(seconds: 20) { readText(logPath).contains("ready:") })
        #expect(chmod(binary, 0) == 0)
        kill(pid, SIGUSR2)
        #expect(eventually(seconds: 10) { readText(logPath).contains("could not execute the binary again (Permission denied); still serving as before") },
                "\(readText(logPath))")
        #expect(try haldHandshake(directory.path + "/c.sock", region: "hwcomposer").fds.count == 3)
        kill(pid, SIGTERM)
        let status = waitForExit(pid, seconds: 10)
        exited = status != nil
        #expect(status == 0)
    }

    @Test("handed-back fds that do not fit the layout: exit 2, one line, nothing touched")
    func mismatchRefused() throws {
        let manager = try FakeServiceManager()
        let server = try ServerProcess(manager: manager)
        #expect(try manager.waitForStore(expectedStore))
        var before = stat()
        #expect(stat(server.sharedMemoryPath, &before) == 0)
        #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
        let other = try ServerProcess(layoutJSON: unalignedLayoutJSON, directory: server.directory, manager: manager,
                                      handing: manager.handBack(), waitForReady: false)
        #expect(other.waitForExit(seconds: 20) == 2)
        #expect(other.log.contains("cannot resume the running VM's shared memory: the handed-back shared memory is 536870912 bytes, "
            + "the layout needs"), "\(other.log)")
        var after = stat()
        #expect(stat(server.sharedMemoryPath, &after) == 0 && after.st_ino == before.st_ino, "the memory was left alone")
        #expect(access(server.clientSocketPath, F_OK) == 0)
    }
}
