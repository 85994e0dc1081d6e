import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

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
