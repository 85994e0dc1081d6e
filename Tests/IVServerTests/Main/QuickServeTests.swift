import WireFormat
import LinuxSystem
@testable import ServerCore
import Testing
@testable import Main

/// `QuickServe` reads plain `serve` command lines without ArgumentParser;
/// it must agree with ArgumentParser wherever it answers, and leave
/// everything else to it.
@Suite("Quick serve arguments agree with ArgumentParser")
struct QuickServeTests {
    /// What the real command line parser makes of `arguments` (nil: it
    /// runs another command); where it rejects them, its error, so that a
    /// test that expected agreement fails with ArgumentParser's words.
    func viaArgumentParser(_ arguments: [String]) throws -> ServeSettings? {
        guard let serve = try IVServerCommand.parseAsRoot(arguments) as? Serve else { return nil }
        return try serve.options.settings()
    }

    @Test("plain serve command lines are read the same way", arguments: [
        [],
        ["serve"],
        ["--shm-path", "/dev/shm/x", "--qemu-sock", "/run/q.sock", "--client-sock", "/run/c.sock"],
        ["serve", "--layout", "conf/vsoc_mem.json", "--log-level", "debug"],
        ["--layout=conf/vsoc_mem.json", "--log-level=warning", "--socket-mode=0666", "--shm-mode", "600"],
        ["--allow-uid", "1000", "--allow-uid=1001", "--allow-gid", "0", "--allow-gid", "root"],
        ["--socket-group", "root", "--handshake-timeout", "0.25", "--max-pending", "20000"],
        ["--handshake-timeout=86400", "--max-pending=1", "--log-level", "trace"],
        ["--max-pending-per-process", "8", "--max-pending-per-user=100", "--max-pending", "300"],
        ["--replace-held-memory", "--shm-path", "/dev/shm/y"],
    ])
    func agrees(_ arguments: [String]) throws {
        let quick = QuickServe.settings(arguments)
        #expect(quick != nil, "\(arguments) should take the quick path")
        #expect(try quick == viaArgumentParser(arguments))
    }

    @Test("everything else goes to ArgumentParser", arguments: [
        ["--help"], ["-h"], ["--version"], ["serve", "--help"], ["help"], ["layout"], ["launch", "--", "true"],
        ["qemu-args"], ["--shm-path"], ["--shm-path", "--qemu-sock", "x"], ["--bogus", "1"], ["extra"],
        ["--log-level", "loud"], ["--socket-mode", "999"], ["--socket-group", "no-such-group-here"],
        ["--allow-uid", "-1"], ["--allow-uid", "x"], ["--max-pending", "0"], ["--handshake-timeout", "0"],
        ["--max-pending-per-process", "0"], ["--max-pending-per-user", "-3"], ["--max-pending-per-user", "x"],
        ["--handshake-timeout", "nan"], ["--shm-path", "/a", "--shm-path", "/b"], ["--layout="],
        ["--qemu-sock", "/same", "--client-sock", "/same"], ["serve", "serve"], ["--", "--shm-path"],
    ])
    func defers(_ arguments: [String]) {
        #expect(QuickServe.settings(arguments) == nil)
    }

    @Test("every flag of the table is declared for ArgumentParser, with the table's help, and nothing else is")
    func oneTable() {
        let help = Serve.helpMessage(columns: 1000)
        for flag in ServeFlag.all {
            #expect(help.contains(flag.name), "serve --help lists \(flag.name)")
            #expect(help.contains(flag.help), "with the table's words for \(flag.name)")
        }
        let declared = help.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ")
            return words.first.flatMap { $0.hasPrefix("--") ? String($0) : nil }
        }
        let known = Set(ServeFlag.all.map(\.name) + ["--help", "--version"])
        #expect(declared.allSatisfy { known.contains($0) }, "declared but not in the table: \(declared.filter { !known.contains($0) })")
    }

    @Test("random command lines: wherever the quick path answers, ArgumentParser answers the same")
    func randomCommandLines() throws {
        let flags = ["--layout", "--shm-path", "--qemu-sock", "--client-sock", "--log-level", "--socket-mode", "--socket-group",
                     "--shm-mode", "--allow-uid", "--allow-gid", "--handshake-timeout", "--max-pending", "--max-pending-per-process",
                     "--max-pending-per-user", "--bogus", "-h"]
        let values = ["/tmp/a", "/tmp/b", "/tmp/c", "", "0", "1", "0660", "777", "1000", "root", "info", "debug", "2.5",
                      "-1", "x", "nan", "86401", "serve", "--shm-path"]
        var generator = SystemRandomNumberGenerator()
        var answered = 0
        for _ in 0..<800 {
            var arguments: [String] = Bool.random(using: &generator) ? ["serve"] : []
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                let flag = flags.randomElement(using: &generator)!
                let value = values.randomElement(using: &generator)!
                arguments += Bool.random(using: &generator) ? [flag, value] : [flag + "=" + value]
            }
            guard let quick = QuickServe.settings(arguments) else { continue }
            answered += 1
            #expect(try quick == viaArgumentParser(arguments), "\(arguments)")
        }
        #expect(answered > 25, "the generator must reach the quick path often enough to mean something")
    }
}
