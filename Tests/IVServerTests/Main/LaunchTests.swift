import LinuxSystem
@testable import ServerCore
import WireFormat
import Glibc
import Testing
@testable import IVServer

/// `ivserver launch|qemu-args|layout` on paths in a temporary directory.
struct LaunchRun {
    let directory = TemporaryDirectory()
    var shm: String { directory.path + "/shm" }
    var qemuSocket: String { directory.path + "/q.sock" }
    var clientSocket: String { directory.path + "/c.sock" }
    let logPath = "/tmp/ivs-launch-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"

    var serverArguments: [String] { ["--shm-path", shm, "--qemu-sock", qemuSocket, "--client-sock", clientSocket] }
    var log: String { readText(logPath) }

    func spawnLaunch(_ extra: [String], command: [String]) throws -> pid_t {
        try spawn([ivserverBinary, "launch"] + serverArguments + extra + ["--"] + command, logPath: logPath)
    }

    /// The VM's pid from ivserver's "VM started (pid N)" line.
    func vmPID(seconds: Double = 10) -> pid_t? {
        let deadline = monotonicSeconds() + seconds
        repeat {
            if let range = log.firstRange(of: "VM started (pid ") {
                return pid_t(log[range.upperBound...].prefix { $0.isNumber })
            }
            sleep(milliseconds: 5)
        } while monotonicSeconds() < deadline
        return nil
    }

    /// `ivserver launch -- qemu … -qtest …`: ivserver's pid and the qtest
    /// session of the QEMU it started.
    func launchQemuUnderQtest() throws -> (ivserver: pid_t, session: QTestSession) {
        try QemuProcess.requireInstalled()
        let qtestPath = directory.path + "/test-qtest.sock"
        let listener = try QTestSession.listen(path: qtestPath)
        let ivserver = try spawnLaunch([], command: [
            QemuProcess.binary, "-machine", "q35", "-accel", "tcg", "-S", "-display", "none", "-nodefaults",
            "-qtest", "unix:\(qtestPath)", "-qtest-log", "/dev/null",
        ])
        do {
            return (ivserver, try QTestSession(accepting: listener, log: logPath))
        } catch {
            kill(ivserver, SIGKILL)
            _ = waitForExit(ivserver, seconds: 5)
            throw error
        }
    }

    /// Only the log and what the test put there may remain.
    func leftovers() -> [String] { directory.entries().filter { !$0.hasPrefix("test-") } }
}

@Suite("ivserver launch, qemu-args and layout", .serialized)
struct LaunchTests {
    @Test("launch starts QEMU attached to the server; killing QEMU ends ivserver with QEMU's status, nothing left")
    func launchQemu() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let (ivserver, session) = try run.launchQemuUnderQtest()
        defer { kill(ivserver, SIGKILL); _ = waitForExit(ivserver, seconds: 5) }
        let device = try IvshmemDevice(session: session)
        #expect(try device.register(IvshmemDevice.ivPosition) == 1024)
        let client = try haldHandshake(run.clientSocket, region: "e2e_primary")
        try #require(client.fds.count == 3)
        try device.ring(vector: 4)
        #expect(try waitForEventFD(client.fds[0], seconds: 5) == 1, "the doorbell reaches the HALD client's eventfd")
        let qemu = try #require(run.vmPID())
        kill(qemu, SIGKILL)
        #expect(waitForExit(ivserver, seconds: 10) == 128 + SIGKILL, "ivserver exits with QEMU's status")
        #expect(run.log.contains("the VM (pid \(qemu)) was killed by SIGKILL: stopping"))
        #expect(run.leftovers() == [])
    }

    @Test("SIGTERM to ivserver stops QEMU first, then cleans up; ivserver exits with QEMU's status")
    func sigtermStopsQemu() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let (ivserver, session) = try run.launchQemuUnderQtest()
        defer { kill(ivserver, SIGKILL); _ = waitForExit(ivserver, seconds: 5) }
        #expect(try IvshmemDevice(session: session).register(IvshmemDevice.ivPosition) == 1024)
        let qemu = try #require(run.vmPID())
        kill(ivserver, SIGTERM)
        #expect(waitForExit(ivserver, seconds: 15) == 0, "QEMU exits 0 on SIGTERM, and so does ivserver")
        #expect(kill(qemu, 0) != 0, "QEMU is gone")
        #expect(run.log.contains("passed SIGTERM on to the VM (pid \(qemu))"))
        #expect(run.leftovers() == [])
    }

    @Test("launch, then SIGUSR2: the re-executed server keeps its VM child, serves it on, and stops with it")
    func reexecUnderLaunch() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let (ivserver, session) = try run.launchQemuUnderQtest()
        var exited = false
        defer { if !exited { kill(ivserver, SIGKILL); _ = waitForExit(ivserver, seconds: 5) } }
        let device = try IvshmemDevice(session: session)
        let qemu = try #require(run.vmPID())
        kill(ivserver, SIGUSR2)
        #expect(eventually(seconds: 20) { run.log.contains("the VM (pid \(qemu)) this process started before it executed itself again runs on") },
                "\(run.log)")
        #expect(run.log.contains("resumed what the previous server process handed over"))
        #expect(!run.log.contains("VM started (pid \(qemu + 1)"), "no second VM")
        let client = try haldHandshake(run.clientSocket, region: "e2e_primary")
        try #require(client.fds.count == 3)
        try device.ring(vector: 4)
        #expect(try waitForEventFD(client.fds[0], seconds: 5) == 1, "the doorbell reaches a client of the new image")
        #expect(try device.register(IvshmemDevice.ivPosition) == 1024)
        // the VM is still the child: its status still becomes ivserver's
        kill(qemu, SIGKILL)
        let status = waitForExit(ivserver, seconds: 10)
        exited = status != nil
        #expect(status == 128 + SIGKILL, "ivserver exits with QEMU's status")
        #expect(run.log.contains("the VM (pid \(qemu)) was killed by SIGKILL: stopping"))
        #expect(run.leftovers() == [])
    }

    @Test("a VM that ignores SIGTERM is killed after --vm-stop-timeout")
    func stopTimeout() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let ivserver = try run.spawnLaunch(["--vm-stop-timeout", "0.3"], command: ["sh", "-c", "trap '' TERM; echo VM-IGNORES-''TERM; exec sleep 30"])
        _ = try #require(run.vmPID())
        // only once the trap is set may the signal come; the marker is
        // quoted in the command, so ivserver's "VM started" line (which
        // shows the command) does not match it before the shell ran
        let deadline = monotonicSeconds() + 10
        while !run.log.contains("VM-IGNORES-TERM") && monotonicSeconds() < deadline { sleep(milliseconds: 5) }
        #expect(fileExists(run.clientSocket))
        kill(ivserver, SIGTERM)
        #expect(waitForExit(ivserver, seconds: 10) == 128 + SIGKILL)
        #expect(run.log.contains("did not exit in time: killed it"))
        #expect(run.leftovers() == [])
    }

    @Test("exit status, missing and non-executable commands, like a shell", arguments: [
        (["sh", "-c", "exit 3"], Int32(3), "exited with status 3"),
        (["/nonexistent/qemu"], Int32(127), "cannot start the VM: start /nonexistent/qemu: no such file or directory"),
        (["NOT-EXECUTABLE"], Int32(126), "cannot start the VM: start NOT-EXECUTABLE: permission denied"),
    ])
    func exitStatus(command: [String], status: Int32, message: String) throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let notExecutable = run.directory.path + "/test-not-executable"
        writeText("#!/bin/sh\n", to: notExecutable)
        chmod(notExecutable, 0o644)
        let command = command == ["NOT-EXECUTABLE"] ? [notExecutable] : command
        let message = message.replacingOccurrences(of: "NOT-EXECUTABLE", with: notExecutable)
        let ivserver = try run.spawnLaunch([], command: command)
        #expect(waitForExit(ivserver, seconds: 10) == status)
        #expect(run.log.contains(message), "\(run.log)")
        #expect(run.leftovers() == [])
    }

    @Test("the VM inherits only its standard streams, even when ivserver inherited more")
    func onlyStandardStreams() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        // an fd without close-on-exec, inherited by ivserver from us
        let leaked = open("/dev/null", O_RDONLY)
        defer { close(leaked) }
        // ls lists the shell's fds while the shell waits for it (no
        // redirection or pipe, which would add fds of the shell's own)
        let ivserver = try run.spawnLaunch([], command: ["sh", "-c", "echo VM-FDS-BEGIN; ls /proc/$$/fd; echo VM-FDS-END"])
        #expect(waitForExit(ivserver, seconds: 10) == 0)
        let lines = run.log.split(separator: "\n").map(String.init)
        let begin = try #require(lines.firstIndex(of: "VM-FDS-BEGIN"))
        let end = try #require(lines.firstIndex(of: "VM-FDS-END"))
        // ivserver's own log lines share the file and may come in between
        let listed = lines[begin + 1..<end].filter { !$0.contains(" ivserver: ") }
        #expect(listed == ["0", "1", "2"], "\(run.log)")
    }

    @Test("--vm-config gives binary, arguments and environment; a bad one exits 2 listing the problems")
    func vmConfig() throws {
        let run = LaunchRun()
        defer { unlink(run.logPath) }
        let config = run.directory.path + "/test-vm.json"
        let out = run.directory.path + "/test-out"
        writeText("""
            { "__comment": "a stand-in VM", "binary": "sh",
              "arguments": ["-c", "echo \\"$IVS_GREETING\\" > \(out); exit 4"],
              "environment": { "IVS_GREETING": "hello from the config" } }
            """, to: config)
        let ivserver = try spawn([ivserverBinary, "launch"] + run.serverArguments + ["--vm-config", config], logPath: run.logPath)
        #expect(waitForExit(ivserver, seconds: 10) == 4)
        #expect(readText(out) == "hello from the config\n")

        writeText("{ \"binary\": \"\", \"arguments\": [1], \"environment\": { \"A\": 2 }, \"bogus\": true }", to: config)
        let bad = try runIVServer(["launch"] + run.serverArguments + ["--vm-config", config], in: run.directory)
        #expect(bad.status == 2)
        #expect(bad.output.contains("invalid VM configuration \(config) (4 problems):"), "\(bad.output)")
        #expect(bad.output.contains("arguments[0] must be a string, not a number"))
        #expect(run.leftovers() == [])
    }

    @Test("launch needs a command, from -- or --vm-config, not both")
    func launchUsage() throws {
        let run = LaunchRun()
        #expect(try runIVServer(["launch"] + run.serverArguments, in: run.directory).status == 64)
        #expect(try runIVServer(["launch", "--vm-config", "/x.json", "--", "sh"], in: run.directory).status == 64)
    }

    @Test("qemu-args prints the options; fed back to QEMU, they attach it")
    func qemuArgs() throws {
        let server = try ServerProcess()
        let lines = try runIVServer(["qemu-args", "--qemu-sock", server.qemuSocketPath], in: server.directory)
        #expect(lines.status == 0)
        let arguments = lines.output.split(separator: "\n").map(String.init)
        #expect(arguments == ["-chardev", "socket,path=\(server.qemuSocketPath),id=ivsh", "-device", "ivshmem-doorbell,chardev=ivsh,vectors=8"])
        let shell = try runIVServer(["qemu-args", "--shell", "--qemu-sock", "/run/my vm/q.sock"], in: server.directory)
        #expect(shell.output == "-chardev 'socket,path=/run/my vm/q.sock,id=ivsh' -device ivshmem-doorbell,chardev=ivsh,vectors=8\n")
        // the whole argument list a launcher gives `serve`
        let serveArguments = ["--layout", "conf/vsoc_mem.json", "--shm-path", "/dev/shm/x", "--qemu-sock", server.qemuSocketPath,
                              "--client-sock", "/run/c.sock", "--log-level", "debug", "--socket-mode", "0660", "--socket-group", "root",
                              "--shm-mode", "0600", "--allow-uid", "1000", "--allow-gid", "0", "--handshake-timeout", "2",
                              "--max-pending", "10", "--max-pending-per-process", "5", "--max-pending-per-user", "8",
                              "--replace-held-memory"]
        let full = try runIVServer(["qemu-args"] + serveArguments, in: server.directory)
        #expect(full.status == 0, "\(full.output)")
        #expect(full.output.split(separator: "\n").map(String.init) == arguments)
        let layout = try runIVServer(["layout"] + serveArguments, in: server.directory)
        #expect(layout.status == 0 && layout.output.hasPrefix("layout conf/vsoc_mem.json: 8 regions, valid"), "\(layout.output)")
        #expect(try runIVServer(["qemu-args", "--max-pending", "0"], in: server.directory).status == 64, "still checked")

        try QemuProcess.requireInstalled()
        let qtestPath = "/tmp/ivs-qemu-args-\(getpid()).sock"
        defer { unlink(qtestPath) }
        let listener = try QTestSession.listen(path: qtestPath)
        let qemuLog = "/tmp/ivs-qemu-args-\(getpid()).log"
        defer { unlink(qemuLog) }
        let qemu = try spawn(["/usr/bin/timeout", "120", QemuProcess.binary, "-machine", "q35", "-accel", "tcg", "-S",
                              "-display", "none", "-nodefaults", "-qtest", "unix:\(qtestPath)", "-qtest-log", "/dev/null"]
                             + arguments, logPath: qemuLog)
        defer { if let child = childPID(of: qemu) { kill(child, SIGKILL) }; _ = waitForExit(qemu, seconds: 10) }
        let device = try IvshmemDevice(session: try QTestSession(accepting: listener, log: qemuLog))
        #expect(try device.register(IvshmemDevice.ivPosition) == 1024)
        #expect(device.msixVectors == 8)
        let client = try haldHandshake(server.clientSocketPath, region: "hwcomposer")
        try device.ring(vector: 0)
        #expect(try waitForEventFD(client.fds[0], seconds: 5) == 1)
        #expect(server.stop() == 0)
    }

    @Test("qemu-args --libvirt prints a domain's <shmem> device, its path escaped for XML")
    func qemuArgsLibvirt() throws {
        let directory = TemporaryDirectory()
        let element = try runIVServer(["qemu-args", "--libvirt", "--qemu-sock", "/run/ivserver/vm1/qemu.sock"], in: directory)
        #expect(element.status == 0)
        #expect(element.output == """
            <shmem name='ivserver'>
              <model type='ivshmem-doorbell'/>
              <server path='/run/ivserver/vm1/qemu.sock'/>
              <msi vectors='8' ioeventfd='on'/>
            </shmem>

            """)
        let odd = try runIVServer(["qemu-args", "--libvirt", "--qemu-sock", "/run/a'b&<c/q.sock"], in: directory)
        #expect(odd.output.contains("<server path='/run/a&apos;b&amp;&lt;c/q.sock'/>"), "\(odd.output)")
        let both = try runIVServer(["qemu-args", "--libvirt", "--shell"], in: directory)
        #expect(both.status == 64)
        #expect(both.output.contains("give --shell or --libvirt, not both"), "\(both.output)")
        #expect(directory.entries() == [])
    }

    @Test("layout prints the worked example's numbers, as a table and as JSON")
    func layoutTable() throws {
        let directory = TemporaryDirectory()
        let table = try runIVServer(["layout"], in: directory)
        #expect(table.status == 0)
        let lines = table.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(lines[2] == ["0", "hwcomposer", "0x1000", "0x5000", "16384", "0", "16", "20", "36", "40", "-"])
        #expect(lines[5] == ["3", "gralloc_memory", "0x10000", "0x19010000", "419430400", "0", "4", "8", "12", "16", "gralloc_manager"])
        #expect(lines[9] == ["7", "e2e_managed", "0x19019000", "0x1901d000", "16384", "0", "8", "12", "20", "24", "e2e_manager"])
        #expect(table.output.contains("allocated 419549184 bytes (0x1901d000); shared memory size 536870912 bytes (0x20000000"))
        #expect(directory.entries() == [])

        let json = try runIVServer(["layout", "--json", "--layout", repositoryRoot + "/conf/vsoc_mem.json"], in: directory)
        #expect(json.status == 0)
        let document = try JSONReader.parse(Array(json.output.utf8))
        #expect(document["size"] == .number("536870912"))
        #expect(document["region_count"] == .number("8"))
        guard case let .array(regions)? = document["regions"] else { Issue.record("no regions array"); return }
        for (region, row) in zip(regions, workedExample) {
            #expect(region["name"] == .string(row.name))
            #expect(region["begin"] == .number("\(row.begin)"))
            #expect(region["end"] == .number("\(row.end)"))
            #expect(region["data_offset"] == .number("\(row.data)"))
            #expect(region["managed_by_index"] == .number("\(row.managedBy)"))
            #expect(region["host_to_guest_signal_table"]?["interrupt_signalled_offset"] == .number("\(row.h2gWord)"))
        }
    }

    @Test("layout on an invalid file exits 2 with every problem and creates nothing")
    func layoutInvalid() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/bad.json"
        writeText(layoutJSON(regionJSON(name: "\"hwcomposer\"", g2h: "{ \"num_nodes_lg2\": 10 }", h2g: "{ \"num_nodes_lg2\": 0 }"),
                             regionJSON(name: "\"x\"", managedBy: "\"nobody\"")), to: path)
        let result = try runIVServer(["layout", "--layout", path], in: directory)
        #expect(result.status == 2)
        #expect(result.output.contains("region 'hwcomposer': signal tables (4108 bytes) overflow region_size 4096"))
        #expect(result.output.contains("region 'x': managed_by names 'nobody', which is not a region of this layout"))
        #expect(directory.entries() == ["bad.json"])
    }
}
