import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

/// What an operator sees: the log under systemd's journal.
@Suite("The operator's view", .serialized)
struct OperatorViewTests {
    /// Starts the server with stderr to a file made first, so that the
    /// file's identity can be given as JOURNAL_STREAM; its log after a stop.
    func logOfServer(journalStream: (String) -> String) throws -> String {
        let directory = TemporaryDirectory()
        let logPath = directory.path + "/log"
        writeText("", to: logPath)
        var info = stat()
        #expect(stat(logPath, &info) == 0)
        let pid = try spawn([ivserverBinary, "--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/q.sock",
                             "--client-sock", directory.path + "/c.sock", "--handshake-timeout", "0.1"],
                            logPath: logPath, environment: ["JOURNAL_STREAM=" + journalStream("\(info.st_dev):\(info.st_ino)")])
        #expect(eventually(seconds: 20) { readText(logPath).contains("ready:") })
        // a warning: a client that never finishes its handshake
        let silent = try connectClient(directory.path + "/c.sock")
        #expect(eventually { readText(logPath).contains("no complete handshake") })
        _ = silent
        kill(pid, SIGTERM)
        #expect(waitForExit(pid, seconds: 10) == 0)
        return readText(logPath)
    }

    @Test("when stderr is the journal (JOURNAL_STREAM matches it): <N> priorities, no timestamps")
    func journalPriorities() throws {
        let log = try logOfServer { $0 }
        let lines = log.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("<6>ivserver: ready: 8 regions") }, "\(log)")
        #expect(lines.contains { $0.hasPrefix("<4>ivserver: client refused (pid ") && $0.contains("no complete handshake within 100 ms") })
        #expect(lines.contains { $0 == "<6>ivserver: stopped" })
        #expect(lines.allSatisfy { $0.hasPrefix("<") }, "every line has its priority")
        #expect(!log.contains("Z info"), "no timestamps")
    }

    @Test("a JOURNAL_STREAM that names another file (inherited) changes nothing")
    func journalStreamOfAnotherFile() throws {
        let log = try logOfServer { _ in "1:2" }
        #expect(log.split(separator: "\n").allSatisfy { $0.hasPrefix("20") && !$0.hasPrefix("<") }, "\(log)")
        #expect(log.contains("Z info ivserver: ready:"))
        #expect(StandardError.journalStream("12:34", names: 12, 34))
        #expect(!StandardError.journalStream("12:35", names: 12, 34))
        #expect(!StandardError.journalStream("garbage", names: 12, 34))
    }
}

@Suite("Status for the service manager and the state dump", .serialized)
struct StatusTests {
    @Test("STATUS= follows the VM and the clients, for systemctl status")
    func serviceStatus() throws {
        let manager = try FakeServiceManager()
        let server = try ServerProcess(manager: manager)
        #expect(try manager.waitFor("STATUS=no VM attached; 0 clients served, 0 refused"), "\(manager.messages)")
        let vm = try FakeVM(server: server, regionCount: defaultPlan.regionCount)
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
        _ = try haldHandshake(server.clientSocketPath, region: "no_such_region")
        #expect(try manager.waitFor("STATUS=VM pid \(getpid()) attached since "), "\(manager.messages)")
        #expect(try manager.waitFor(" UTC; 1 clients served, 1 refused"), "\(manager.messages)")
        vm.socket.close()
        #expect(try manager.waitFor("STATUS=no VM attached; 1 clients served, 1 refused"), "\(manager.messages)")
        #expect(server.stop() == 0)
    }

    @Test("SIGUSR1 logs the whole state: layout, memory, VM, each region's clients, refusals, pending")
    func stateDump() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: defaultPlan.regionCount)
        for _ in 0..<2 { #expect(try haldHandshake(server.clientSocketPath, region: "e2e_primary").fds.count == 3) }
        let pending = try connectClient(server.clientSocketPath)
        #expect(server.waitForLog(containing: "client served region 'e2e_primary' (#4)"))
        kill(server.pid, SIGUSR1)
        #expect(server.waitForLog(containing: "state: 0 clients refused after connecting, 0 peers refused by the access policy; 1 handshakes pending"),
                "\(server.log)")
        let log = server.log
        #expect(log.contains("state: layout built-in default layout (conf/vsoc_mem.json): 8 regions; shared memory \(server.sharedMemoryPath) (inode "))
        #expect(log.contains("state: VM pid \(getpid()) uid \(getuid()) attached since "))
        #expect(log.contains("state: region 'e2e_primary' (#4): 2 clients served"))
        #expect(log.contains("state: region 'hwcomposer' (#0): 0 clients served"))
        _ = (vm, pending)
        #expect(server.stop() == 0)
    }
}

@Suite("Log levels with content", .serialized)
struct LogLevelTests {
    @Test("debug shows each step of a handshake, the checks and the timer; trace adds the bytes; info shows neither")
    func levels() throws {
        let traced = try ServerProcess(arguments: ["--log-level", "trace"])
        #expect(try haldHandshake(traced.clientSocketPath, region: "hwcomposer").fds.count == 3)
        let vm = try FakeVM(server: traced, regionCount: defaultPlan.regionCount)
        #expect(traced.waitForLog(containing: "handshake decided after "))
        #expect(traced.waitForLog(containing: "sent version 0, id 1024, the shared memory (fd "))
        let log = traced.log
        let me = "pid \(getpid()) uid \(getuid()) gid \(getgid())"
        #expect(log.contains("debug ivserver: checked for a leftover shared memory at \(traced.sharedMemoryPath): none"))
        #expect(log.contains("debug ivserver: checked for a leftover socket at \(traced.clientSocketPath): none"))
        #expect(log.contains("debug ivserver: client \(me): sent the greeting (protocol version 0)"))
        #expect(log.contains("debug ivserver: handshake timer armed for 5000 ms"))
        #expect(log.contains("trace ivserver: received from client \(me): 0a 00 68 77 63 6f 6d 70 6f 73 65 72"), "\(log)")
        #expect(log.contains("trace ivserver: sent to client \(me): 00 00 00 00\n"))
        #expect(log.contains("trace ivserver: sent to client \(me): 00 00 00 00 00 00 00 00\n"))
        #expect(log.contains("debug ivserver: client \(me): sent the grant for region #0 (8 bytes, fds guest_to_host "))
        #expect(log.contains("8× peer 0 with a guest_to_host eventfd, 8× id 1024 with a host_to_guest eventfd"))
        // version 0, id 1024 (00 04), -1 for the memory, then 0s and 1024s
        #expect(log.contains("trace ivserver: sent to VM \(me): 00 00 00 00 00 00 00 00 00 04 00 00 00 00 00 00 ff ff ff ff ff ff ff ff 00 00"))
        _ = vm
        #expect(traced.stop() == 0)

        let quiet = try ServerProcess(arguments: ["--log-level", "info"])
        #expect(try haldHandshake(quiet.clientSocketPath, region: "hwcomposer").fds.count == 3)
        #expect(quiet.waitForLog(containing: "client served region 'hwcomposer'"))
        #expect(quiet.stop() == 0)
        #expect(!quiet.log.contains("debug") && !quiet.log.contains("trace"), "\(quiet.log)")
    }
}

@Suite("ivctl status", .serialized)
struct IVCtlStatusTests {
    @Test("ivctl status prints the server's state; the request is a handshake like any other", .enabled(if: getuid() == 0, "needs root: a client runs as another user (setpriv)"))
    func status() throws {
        // a socket open to all, so that the server's own check is what refuses
        let server = try ServerProcess(arguments: ["--socket-mode", "0666"])
        chmod(server.directory.path, 0o755)
        let vm = try FakeVM(server: server, regionCount: defaultPlan.regionCount)
        #expect(try haldHandshake(server.clientSocketPath, region: "e2e_manager").fds.count == 3)
        #expect(server.waitForLog(containing: "client served region 'e2e_manager'"))
        let result = try ivctl(["status"], server: server)
        #expect(result.status == 0, "\(result.errors)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("layout built-in default layout (conf/vsoc_mem.json): 8 regions; shared memory \(server.sharedMemoryPath) (inode ") == true,
                "\(result.output)")
        #expect(lines.contains { $0.hasPrefix("VM pid \(getpid()) uid \(getuid()) attached since ") })
        #expect(lines.contains("region 'e2e_manager' (#6): 1 clients served"))
        #expect(lines.last == "0 clients refused after connecting, 0 peers refused by the access policy; 0 handshakes pending, 0 connections waiting for room")
        // the same access rule as any client: nobody is refused, and gets no state
        let refused = try haldHandshakeAsUser(uid: 65534, gid: 65534, socket: server.clientSocketPath, region: HALDProtocol.statusRequestName)
        #expect(refused == "closed-before-greeting", "\(refused)")
        #expect(server.waitForLog(containing: "refused pid "))
        _ = vm
        #expect(server.stop() == 0)
        // no server: the same errors and exit codes as the other commands
        let missing = try ivctl(["status", "--client-sock", server.directory.path + "/none.sock"])
        #expect(missing.status == 1)
        #expect(missing.errors.contains("no such socket"))
    }

    @Test("the requests' names can never be a region's: 16 bytes, where names have 15 at most")
    func statusName() {
        #expect(HALDProtocol.statusRequestName.utf8.count == 16)
        #expect(HALDProtocol.vmInfoRequestName.utf8.count == 16)
        var handshake = ClientHandshake(regionIndexByName: ["hwcomposer": 0])
        #expect(handshake.receive([16, 0] + Array(HALDProtocol.statusRequestName.utf8)) == .query(.status))
        var vm = ClientHandshake(regionIndexByName: ["hwcomposer": 0])
        #expect(vm.receive([16, 0] + Array(HALDProtocol.vmInfoRequestName.utf8)) == .query(.vmInfo))
        var other = ClientHandshake(regionIndexByName: ["hwcomposer": 0])
        #expect(other.receive([16, 0] + Array("#ivserver.statuS".utf8)) == .refuse(.unknownRegion("'#ivserver.statuS'")))
    }
}
