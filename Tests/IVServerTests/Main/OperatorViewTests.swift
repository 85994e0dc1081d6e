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
