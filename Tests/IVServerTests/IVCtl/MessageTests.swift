import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

/// Messages that must point at what is actually wrong (issue 34).
@Suite("Messages that point at the right thing")
struct MessageTests {
    @Test("a socket in a missing directory: exit 1, the message names the directory and says it does not exist, nothing left")
    func missingSocketDirectory() throws {
        let directory = TemporaryDirectory()
        let result = try runIVServer(["--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/vm1/qemu.sock",
                                      "--client-sock", directory.path + "/vm1/client.sock"], in: directory)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.output.contains("error ivserver: \(directory.path)/vm1: the directory does not exist, so \(directory.path)/vm1/qemu.sock "
            + "cannot be made in it; create it first (mkdir -p \(directory.path)/vm1)"), "\(result.output)")
        #expect(directory.entries().isEmpty, "no memory, no lock: \(directory.entries())")
    }

    @Test("a shared memory in a missing directory says so too")
    func missingMemoryDirectory() throws {
        let directory = TemporaryDirectory()
        let result = try runIVServer(["--shm-path", directory.path + "/none/shm", "--qemu-sock", directory.path + "/q.sock",
                                      "--client-sock", directory.path + "/c.sock"], in: directory)
        #expect(result.status == 1)
        #expect(result.output.contains("\(directory.path)/none: the directory does not exist"), "\(result.output)")
        #expect(directory.entries().isEmpty)
    }

    @Test("ivctl on the QEMU socket: not a host-client socket, not a refused handshake")
    func ivctlOnTheQemuSocket() throws {
        let server = try ServerProcess()
        let result = try ivctl(["status", "--client-sock", server.qemuSocketPath])
        #expect(result.status == 1)
        #expect(result.errors == "ivctl: \(server.qemuSocketPath): this is not a host-client socket: it speaks QEMU's ivshmem protocol, "
            + "as ivserver's --qemu-sock or a multi-peer server's socket does; give ivserver's --client-sock "
            + "(for a multi-peer server, use ivctl peer … -S)\n", "\(result.errors)")
        #expect(try ivctl(["status"], server: server).status == 0, "the client socket still answers")
        #expect(server.stop() == 0)
    }

    @Test("ivctl on a multi-peer server's socket says the same")
    func ivctlOnAPeerSocket() throws {
        let server = try ServerProcess(multiPeer: ["-l", "64K"])
        let result = try ivctl(["regions", "--client-sock", server.peerSocketPath])
        #expect(result.status == 1 && result.errors.contains("this is not a host-client socket"), "\(result.errors)")
        #expect(server.stop() == 0)
    }

    @Test("ivctl peer with no server names its -S option, not --client-sock")
    func peerWithNoServer() throws {
        let directory = TemporaryDirectory()
        let result = try ivctl(["peer", "list", "-S", directory.path + "/none.sock"])
        #expect(result.status == 1)
        #expect(result.errors == "ivctl: \(directory.path)/none.sock: no such socket; is the multi-peer server running, and is this its socket (-S)?\n")
    }

    @Test("a group that does not exist is named as such", arguments: [["--socket-group", "nosuchgroup"], ["multi-peer", "--allow-gid", "nosuchgroup"]])
    func unknownGroup(arguments: [String]) throws {
        let directory = TemporaryDirectory()
        let result = try runIVServer(arguments, in: directory)
        #expect(result.status == 64)
        #expect(result.output.contains("there is no group named 'nosuchgroup' on this host"), "\(result.output)")
    }

    @Test("a negative offset or length says they are 0 or more", arguments: [
        ["dump", "r", "--offset", "-1"], ["dump", "r", "--length", "-5"], ["write", "r", "--offset", "-1", "x"],
        ["signal", "r", "--offset", "-4"], ["peer", "dump", "--offset", "-1"], ["peer", "write", "--offset", "-1", "x"],
    ])
    func negativeOffset(arguments: [String]) throws {
        let result = try ivctl(arguments)
        #expect(result.status == 64)
        #expect(result.errors.contains("is invalid for '--") && result.errors.contains("': offsets and lengths are 0 or more"), "\(result.errors)")
    }
}
