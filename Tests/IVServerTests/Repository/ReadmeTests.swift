import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// The first ```sh block after `heading` in `page`, a line each.
func shellBlock(in page: String, after heading: String) throws -> [String] {
    let lines = page.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let start = lines.firstIndex(of: heading),
          let fence = lines[start...].firstIndex(of: "```sh"),
          let end = lines[(fence + 1)...].firstIndex(of: "```")
    else { throw TestFailure("no ```sh block after \(heading)") }
    return Array(lines[(fence + 1)..<end])
}

@Suite("README.md's commands, pasted into a shell")
struct ReadmeTests {
    @Test("Attach a VM, then Talk to it from the host: each command works as written, with the tools on PATH, and nothing is left")
    func attachAndTalk() throws {
        let readme = readText(repositoryRoot + "/README.md")
        let attach = try shellBlock(in: readme, after: "## Attach a VM")
        // `watch` runs until Ctrl-C: a person reads its lines, a script cannot wait for them.
        let talk = try shellBlock(in: readme, after: "## Talk to it from the host").filter { !$0.contains("until Ctrl-C") }
        let user = "ivsdoc\(getpid())"
        let socket = "/tmp/\(user)-vm1/client.sock"
        let script = (["set -e"] + attach + [
            // What a person does between the two blocks: wait until the VM is there.
            "for i in $(seq 300); do ivctl status --client-sock \(socket) 2>/dev/null | grep -q 'attached since' && break; sleep 0.1; done",
        ] + talk + ["wait"]).joined(separator: "\n")
        let binaries = String(ivserverBinary[..<ivserverBinary.lastIndex(of: "/")!])
        let run = try runTool(["/usr/bin/env", "USER=\(user)", "PATH=\(binaries):/usr/local/bin:/usr/bin:/bin", "bash", "-c", script], timeout: 60)
        defer { _ = try? runTool(["/bin/rm", "-rf", "/tmp/\(user)-vm1", "/dev/shm/\(user)-vm1", "/dev/shm/\(user)-vm1.lock"]) }
        #expect(run.status == 0, "\(script)\n--- out\n\(run.output)\n--- err\n\(run.errors)")
        #expect(run.output.contains("layout at \(socket): 8 regions"), "\(run.output)")
        #expect(run.output.contains("wrote 5 bytes at offset 24 of region 'e2e_primary'"))
        #expect(run.output.contains("interrupted the guest on region e2e_primary"))
        #expect(run.output.contains("attached since"), "ivctl status shows the VM")
        #expect(run.output.contains("\"vm\": {"), "and so does its JSON")
        #expect(directoryEntries("/tmp/\(user)-vm1").isEmpty && !fileExists("/dev/shm/\(user)-vm1"), "nothing is left")
    }
}
