import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer
import WireFormat

/// ivserver outlives its VMs: a new VM must start with the signalling state
/// of a freshly started server, whatever the previous one left, while a VM
/// taken over across ivserver's own restart keeps everything.
@Suite("A new VM starts clean", .serialized)
struct NewVMTests {
    let plan = LayoutLoader.loadDefault()
    var primary: Int { plan.regions.first { $0.name == "e2e_primary" }!.index }

    @Test("a real QEMU leaves with the host's interrupt not taken; the next QEMU's vector fires at the host's first interrupt")
    func interruptAfterAnotherVM() throws {
        let server = try ServerProcess()
        let client = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let first = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let firstDevice = try IvshmemDevice(qemu: first)
        #expect(server.waitForLog(containing: "VM connected (pid \(first.pid)"))
        let firstVM = try #require(try client.attachedVM(), "the first VM is attached")
        #expect(firstVM.pid == first.pid)
        #expect(try client.interruptGuest(), "rang the first VM")
        #expect(try firstDevice.waitForVectors([primary]) == [primary])
        // No guest driver took it: the word is still set when QEMU goes.
        #expect(try client.memory.load(offset: Int(client.descriptor.hostToGuest.signalledOffset)) == 1)
        let mark = server.logMark()
        first.kill()
        #expect(server.waitForLog(containing: "VM disconnected (pid \(first.pid)", after: mark))
        #expect(try client.attachedVM() == nil, "no VM between the two")

        let second = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let secondDevice = try IvshmemDevice(qemu: second)
        #expect(server.waitForLog(containing: "VM connected (pid \(second.pid)", after: mark))
        #expect(server.log(after: mark).contains("its signalling state starts clean: reset region 'e2e_primary' (#\(primary)): "
            + "host → guest interrupt_signalled was set"), "\(server.log(after: mark))")
        let secondVM = try #require(try client.attachedVM())
        #expect(!secondVM.isSameVM(as: firstVM), "a host client can tell the VM changed")
        #expect(try client.interruptGuest(), "the host's first interrupt to the new VM rings (it did not merge)")
        #expect(try secondDevice.waitForVectors([primary]) == [primary], "and the new VM's vector fires")
        let status = try ivctl(["status"], server: server).output
        #expect(status.contains("VM pid \(second.pid) uid \(getuid()) attached since "))
        #expect(status.contains("process started "), "\(status)")
        #expect(status.contains("a new VM finds the regions' data as it was left and every region's signalling state reset; "
            + "at the last new VM's attach, region 'e2e_primary' (#\(primary)): host → guest interrupt_signalled was set"), "\(status)")
        #expect(server.stop() == 0)
    }

    @Test("the original guest's code path: an interrupt the first guest never took does not swallow the second guest's; the host is not woken for the first guest's ring")
    func emulatedGuests() throws {
        let server = try ServerProcess()
        let client = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let layout = client.layout
        let vm1 = try FakeVM(server: server, regionCount: plan.regionCount)
        let guest1 = try EmulatedGuest(vm: vm1, region: primary, layout: layout)
        #expect(try client.interruptGuest())
        // The first guest rings the host and leaves; nobody took either.
        #expect(try guest1.interruptHost())
        #expect(server.waitForLog(containing: "VM connected"))
        let mark = server.logMark()
        vm1.socket.close()
        #expect(server.waitForLog(containing: "VM disconnected", after: mark))

        let vm2 = try FakeVM(server: server, regionCount: plan.regionCount)
        let guest2 = try EmulatedGuest(vm: vm2, region: primary, layout: layout)
        #expect(server.waitForLog(containing: "VM connected", after: mark))
        #expect(try guest2.hostInterruptWord == 0 && guest2.guestInterruptWord == 0, "both words start clear")
        #expect(try client.waitForGuest(timeout: .milliseconds(200)) == nil, "the first guest's ring does not wake the host")
        #expect(try ivctl(["wait", "e2e_primary", "--timeout", "0.2"], server: server).status == 2)
        #expect(try !guest2.waitForInterrupt(seconds: 0), "no interrupt is pending for the new guest")
        #expect(try client.interruptGuest(), "the host's first interrupt to the new guest rings")
        #expect(try guest2.waitForInterrupt(seconds: 5), "and the new guest takes it")
        #expect(try guest2.interruptHost(), "the new guest's first interrupt rings too")
        #expect(try client.waitForGuest(timeout: .seconds(5)) != nil, "and wakes the host")
        #expect(server.stop() == 0)
    }

    @Test("a restart with the VM kept resets nothing: interrupts pending across it are delivered", arguments: ["SIGUSR2", "SIGKILL and the fd store"])
    func restartKeepsState(how: String) throws {
        let manager = try FakeServiceManager()
        var server = try ServerProcess(manager: manager)
        let client = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let guest = try EmulatedGuest(vm: vm, region: primary, layout: client.layout)
        // (The log is written after the handshake: wait for it before marking.)
        #expect(server.waitForLog(containing: "VM connected"))
        #expect(try manager.waitForStore(Set(manager.storedNames.map(FakeServiceManager.kind)).union([Handover.vm])))
        #expect(try client.interruptGuest())
        #expect(try guest.interruptHost())
        let mark = server.logMark()
        if how == "SIGUSR2" {
            kill(server.pid, SIGUSR2)
        } else {
            #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
            server = try ServerProcess(directory: server.directory, manager: manager, handing: manager.handBack())
        }
        #expect(server.waitForLog(containing: "VM still attached", after: how == "SIGUSR2" ? mark : 0))
        #expect(try guest.waitForInterrupt(seconds: 5), "the host's interrupt from before the restart is still there")
        #expect(try client.waitForGuest(timeout: .seconds(5)) != nil, "and so is the guest's")
        #expect(!server.log(after: how == "SIGUSR2" ? mark : 0).contains("signalling state starts clean"), "nothing was reset")
        #expect(server.stop() == 0)
    }
}
