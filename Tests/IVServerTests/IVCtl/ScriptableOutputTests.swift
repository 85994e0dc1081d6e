import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer
import WireFormat

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
