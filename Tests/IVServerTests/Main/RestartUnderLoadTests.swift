import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer

/// The lines of a server's log at warning or error level that name the
/// server's own pid: what a restart must never leave.
func warningsAboutItself(_ log: String, pid: Int32) -> [Substring] {
    log.split(separator: "\n").filter { line in
        (line.contains(" warning ") || line.contains(" error ")) && line.contains("pid \(pid)")
    }
}

/// A thread that does HALD handshakes one after another until stopped,
/// counting those served, as host clients do around a restart.
final class HandshakeLoad: Sendable {
    private struct Counts { var served = 0; var failed = 0; var running = true; var lastServed = 0.0 }
    private let counts = Shared(Counts())
    private let thread: TestThread

    init(socket: String, region: String = "e2e_primary") {
        let counts = self.counts
        thread = TestThread {
            while counts.value.running {
                let served = (try? haldHandshake(socket, region: region).fds.count == 3) ?? false
                counts.update { counts in
                    if served {
                        counts.served += 1
                        counts.lastServed = monotonicSeconds()
                    } else {
                        counts.failed += 1
                    }
                }
                // A refused connect fails at once; don't spin a core on it.
                if !served { usleep(200) }
            }
        }
    }

    var served: Int { counts.value.served }
    var failed: Int { counts.value.failed }

    /// Waits until a handshake started after `time` (monotonic seconds) was
    /// served; when it was, or nil at the deadline.
    func waitForServed(after time: Double, seconds: Double = 10) -> Double? {
        var when: Double?
        _ = eventually(seconds: seconds) {
            let last = counts.value.lastServed
            if last > time { when = last }
            return when != nil
        }
        return when
    }

    func stop() {
        counts.update { $0.running = false }
        thread.join()
    }

    deinit { stop() }
}

/// Restarts under load, as a service manager with Restart=on-failure sees
/// them: the takeover never connects to its own sockets, a VM whose
/// handshake could not go out is never attached, and a resumed VM that
/// leaves is seen.
@Suite("Restarts under load", .serialized)
struct RestartUnderLoadTests {
    let plan = LayoutLoader.loadDefault()

    func inode(_ fd: OwnedFD) -> UInt64 {
        var info = stat()
        return fstat(fd.rawValue, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test("SIGKILL and a relaunch with no VM attached: the new server connects to neither of its sockets, attaches no VM, warns of nothing")
    func relaunchWithoutVM() throws {
        let manager = try FakeServiceManager()
        let server = try ServerProcess(manager: manager)
        #expect(try manager.waitFor("READY=1"))
        #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
        let restarted = try ServerProcess(directory: server.directory, manager: manager, handing: manager.handBack())
        #expect(restarted.waitForLog(containing: "resumed what the previous server process handed over"))
        #expect(try haldHandshake(restarted.clientSocketPath, region: "hwcomposer").fds.count == 3)
        let vm = try FakeVM(server: restarted, regionCount: plan.regionCount)
        #expect(restarted.waitForLog(containing: "VM connected (pid \(getpid())"))
        #expect(restarted.log.components(separatedBy: "VM connected").count == 2, "one VM attached, the test's:\n\(restarted.log)")
        #expect(!restarted.log.contains("a peer (pid \(restarted.pid)"), "no probe of its own")
        #expect(warningsAboutItself(restarted.log, pid: restarted.pid).isEmpty, "\(restarted.log)")
        #expect(!restarted.log.contains(" warning ") && !restarted.log.contains(" error "), "\(restarted.log)")
        _ = vm
        #expect(restarted.stop() == 0)
    }

    @Test("SIGUSR2 with no VM attached, under a service manager and without: the server serves on, no VM appears")
    func reexecWithoutVM() throws {
        for managed in [true, false] {
            let manager = try FakeServiceManager()
            let server = try ServerProcess(manager: managed ? manager : nil)
            for round in 1...3 {
                kill(server.pid, SIGUSR2)
                #expect(server.waitForLog(containing: "ready:", seconds: 10) && eventually(seconds: 10) {
                    server.log.components(separatedBy: "ready:").count == round + 2
                }, "ready after re-exec \(round) (managed: \(managed)):\n\(server.log)")
                #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
            }
            #expect(kill(server.pid, 0) == 0, "still running")
            #expect(!server.log.contains("VM connected") && !server.log.contains("connected to the QEMU socket"), "\(server.log)")
            #expect(warningsAboutItself(server.log, pid: server.pid).isEmpty, "\(server.log)")
            #expect(server.stop() == 0)
        }
    }

    @Test("1,000 peers that connect to the QEMU socket and close at once, with and without a service manager: none is attached, the server serves on")
    func connectAndCloseOnTheQemuSocket() throws {
        for managed in [true, false] {
            let manager = try FakeServiceManager()
            let server = try ServerProcess(arguments: ["--log-level", "info"], manager: managed ? manager : nil)
            for _ in 0..<1000 {
                let probe = try UnixSocket.connect(path: server.qemuSocketPath)
                probe.close()
            }
            // The server is alive and takes a VM after all of them.
            let vm = try FakeVM(server: server, regionCount: plan.regionCount)
            #expect(vm.ownVectors.count == plan.regionCount)
            if managed {
                #expect(try manager.waitForStore(Set(manager.storedNames.map(FakeServiceManager.kind)).union([Handover.vm])))
            }
            #expect(kill(server.pid, 0) == 0)
            #expect(server.stop() == 0, "a clean stop after 1,000 probes (managed: \(managed))")
        }
    }

    @Test("QEMU killed after a restart is seen as gone at once, and the next VM is taken")
    func resumedVMLeaves() throws {
        for viaManager in [true, false] {
            let manager = try FakeServiceManager()
            var server = try ServerProcess(manager: manager)
            let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
            _ = try IvshmemDevice(qemu: qemu)
            #expect(try manager.waitForStore(Set(manager.storedNames.map(FakeServiceManager.kind)).union([Handover.vm])))
            if viaManager {
                #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
                server = try ServerProcess(directory: server.directory, manager: manager, handing: manager.handBack())
            } else {
                kill(server.pid, SIGUSR2)
            }
            #expect(server.waitForLog(containing: "VM still attached (pid \(qemu.pid)"), "\(server.log)")
            let killed = monotonicSeconds()
            qemu.kill()
            #expect(server.waitForLog(containing: "VM disconnected (pid \(qemu.pid)"), "the resumed VM's departure: \(server.log)")
            print("resumed VM's departure logged \(Int((monotonicSeconds() - killed) * 1000)) ms after the kill")
            #expect(try ivctl(["status"], server: server).output.contains("no VM attached"))
            let next = try FakeVM(server: server, regionCount: plan.regionCount)
            #expect(next.ownVectors.count == plan.regionCount, "the next VM is not refused as a second one")
            #expect(server.stop() == 0)
        }
    }

    @Test("chaos: SIGKILL (some during the takeover) and SIGUSR2 at random under handshake load, with a real VM ringing and then none: nothing separates, nothing warns of itself")
    func chaos() throws {
        var generator = SystemRandomNumberGenerator()
        let manager = try FakeServiceManager()
        var server = try ServerProcess(arguments: ["--log-level", "info"], manager: manager)
        let directory = server.directory
        var qemu: QemuProcess? = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu!)
        // A region the guest does not ring, whose eventfds are compared after each restart.
        let first = try RegionConnection.open(region: "hwcomposer", socket: server.clientSocketPath)
        let memory = inode(first.sharedMemory)
        let load = HandshakeLoad(socket: server.clientSocketPath)
        // The guest rings region 4's doorbell every 20 ms while it runs.
        let ringing = Shared(true)
        // (Only this thread uses the qtest session until it is joined.)
        nonisolated(unsafe) let guest = device
        let ringer = TestThread {
            while ringing.value {
                do {
                    try guest.ring(vector: 4)
                } catch {
                    Issue.record("the guest could not ring: \(error)")
                    return
                }
                usleep(20_000)
            }
        }
        var logs: [(pid: Int32, log: String)] = []
        var downtimes: [Double] = []
        let rounds = 40
        for round in 0..<rounds {
            if round == rounds / 2, let running = qemu {
                // From here on, restarts with no VM attached.
                ringing.update { $0 = false }
                ringer.join()
                let mark = server.logMark()
                running.kill()
                #expect(server.waitForLog(containing: "VM disconnected (pid \(running.pid)", after: mark), "\(server.log(after: mark))")
                qemu = nil
            }
            let start = monotonicSeconds()
            var resumedFrom = 0
            if Bool.random(using: &generator) {
                #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
                logs.append((server.pid, server.log))
                if Int.random(in: 0..<3, using: &generator) == 0 {
                    // Killed again while it takes over.
                    let doomed = try ServerProcess(arguments: ["--log-level", "info"], directory: directory, manager: manager,
                                                   handing: manager.handBack(), waitForReady: false)
                    usleep(UInt32.random(in: 0...20_000, using: &generator))
                    doomed.stop(signal: SIGKILL)
                    logs.append((doomed.pid, doomed.log))
                }
                server = try ServerProcess(arguments: ["--log-level", "info"], directory: directory, manager: manager,
                                           handing: manager.handBack())
            } else {
                let mark = server.logMark()
                resumedFrom = mark
                kill(server.pid, SIGUSR2)
                #expect(server.waitForLog(containing: "ready:", after: mark), "\(server.log(after: mark))")
            }
            guard let served = load.waitForServed(after: start) else {
                Issue.record("round \(round): no handshake served after the restart; log:\n\(server.log)")
                break
            }
            downtimes.append(served - start)
            let client = try RegionConnection.open(region: "hwcomposer", socket: server.clientSocketPath)
            #expect(inode(client.sharedMemory) == memory, "round \(round): the same memory")
            #expect(try sameEventFD(client.guestToHost, first.guestToHost), "round \(round): the same eventfds")
            if qemu != nil {
                #expect(server.waitForLog(containing: "VM still attached", after: resumedFrom), "round \(round): the VM was resumed")
            }
        }
        logs.append((server.pid, server.log))
        for (pid, log) in logs {
            #expect(warningsAboutItself(log, pid: pid).isEmpty, "server \(pid) warned about itself:\n\(log)")
            #expect(!log.contains("a peer (pid \(pid)"), "server \(pid) probed its own socket")
        }
        // A new VM attaches to the server that survived it all.
        let next = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let nextDevice = try IvshmemDevice(qemu: next)
        try first.memory.write(Array("after the chaos".utf8), offset: Int(first.descriptor.dataOffset))
        let data = UInt64(first.descriptor.beginOffset + first.descriptor.dataOffset)
        #expect(try next.session.read(IvshmemDevice.sharedMemoryAddress + data, count: 15) == Array("after the chaos".utf8))
        _ = device
        _ = nextDevice
        let sorted = downtimes.sorted()
        print("chaos: \(sorted.count) restarts, \(load.served) handshakes served, \(load.failed) failed; downtime median "
            + "\(Int(sorted[sorted.count / 2] * 1000)) ms, worst \(Int(sorted.last! * 1000)) ms")
        // (Stopped first: under a service manager the listeners outlive
        // the server, and a connection made now would wait for the next one.)
        load.stop()
        #expect(server.stop() == 0)
    }
}
