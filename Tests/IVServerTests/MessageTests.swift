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

/// Output scripts read (issue 34): JSON, and `ivctl regions` on any layout.
@Suite("Scriptable output")
struct ScriptableOutputTests {
    private func parse(_ text: String) throws -> JSONValue {
        try JSONReader.parse(Array(text.utf8))
    }

    @Test("ivctl status --json: version, vm null without a VM and the VM's pid with one, the regions by name")
    func statusJSON() throws {
        let server = try ServerProcess(layoutJSON: unalignedLayoutJSON)
        let idle = try ivctl(["status", "--json"], server: server)
        #expect(idle.status == 0 && idle.errors.isEmpty, "\(idle)")
        let before = try parse(idle.output)
        #expect(before["version"] == .number("1"))
        #expect(before["vm"] == .null)
        guard case let .object(regions)? = before["regions"] else { throw TestFailure("no regions object: \(idle.output)") }
        #expect(regions.map(\.key) == ["ring", "odd", "manager", "managed"])
        #expect(before["regions"]?["managed"]?["managed_by"] == .string("manager"))
        guard case let .array(state)? = before["state"], !state.isEmpty else { throw TestFailure("no state lines: \(idle.output)") }

        let mark = server.logMark()
        let vm = try connectClient(server.qemuSocketPath)
        #expect(server.waitForLog(containing: "VM connected", after: mark))
        let attached = try parse(try ivctl(["status", "--json"], server: server).output)
        #expect(attached["vm"]?["pid"] == .number(String(getpid())), "the VM is this test's connection")
        vm.close()
        #expect(server.stop() == 0)
    }

    @Test("ivctl regions works on a layout with none of Cuttlefish's region names, as a table and as JSON")
    func regionsOfAnyLayout() throws {
        let server = try ServerProcess(layoutJSON: unalignedLayoutJSON)
        let table = try ivctl(["regions"], server: server)
        #expect(table.status == 0, "\(table)")
        #expect(table.output.contains("4 regions") && table.output.contains("managed"), "\(table.output)")
        let json = try ivctl(["regions", "--json"], server: server)
        #expect(json.status == 0)
        let parsed = try parse(json.output)
        #expect(parsed["version"] == .number("1"))
        #expect(parsed["regions"]?["ring"]?["index"] == .number("0"))
        #expect(parsed["regions"]?["odd"]?["size"] == .number("100"))
        // Through a named region, as for an older server.
        #expect(try ivctl(["regions", "--region", "odd"], server: server).output == table.output)
        #expect(server.stop() == 0)
    }

    @Test("ivctl peer list --json: version, this peer, and the peers array")
    func peerListJSON() throws {
        let server = try ServerProcess(multiPeer: ["-l", "64K", "-n", "2"])
        let others = try (0..<2).map { _ in try RawPeer(joining: server.peerSocketPath, vectors: 2, others: nil) }
        let result = try runTool([ivctlBinary, "peer", "list", "--json", "-S", server.peerSocketPath])
        #expect(result.status == 0, "\(result)")
        let parsed = try parse(result.output)
        #expect(parsed["version"] == .number("1"))
        #expect(parsed["shared_memory_size"] == .number("65536"))
        #expect(parsed["vectors"] == .number("2"))
        guard case let .array(peers)? = parsed["peers"] else { throw TestFailure("no peers array: \(result.output)") }
        #expect(peers.map { $0["id"] } == others.map { .number(String($0.id)) })
        #expect(peers.allSatisfy { $0["vectors"] == .number("2") })
        #expect(server.stop() == 0)
    }

    @Test("errors stay on standard error with the same exit codes under --json")
    func jsonErrors() throws {
        let directory = TemporaryDirectory()
        let result = try ivctl(["status", "--json", "--client-sock", directory.path + "/none.sock"])
        #expect(result.status == 1 && result.output.isEmpty && result.errors.contains("no such socket"))
    }
}
