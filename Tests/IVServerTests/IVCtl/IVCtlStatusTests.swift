import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

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
