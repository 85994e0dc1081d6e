import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

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
