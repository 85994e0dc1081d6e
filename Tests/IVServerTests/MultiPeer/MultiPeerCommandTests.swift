import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// The multi-peer mode's command line: QEMU's ivshmem-server's flags,
/// the `ivshmem-server` name, going to the background, bad input.
@Suite(.serialized) struct MultiPeerCommandTests {
    /// A link named ivshmem-server to the binary, as `make` and the .deb install it.
    private func linkedBinary(in directory: TemporaryDirectory) -> String {
        let path = directory.path + "/ivshmem-server"
        symlink(ivserverBinary, path)
        return path
    }

    @Test func underTheNameIvshmemServerItIsQemusServer() throws {
        let directory = TemporaryDirectory()
        let help = try runTool([linkedBinary(in: directory), "-h"])
        #expect(help.status == 0)
        #expect(help.output.contains("USAGE: ivshmem-server"), "\(help.output)")
        for flag in ["-S", "-M", "-m", "-l", "-n", "-F", "-p", "-v", "--socket-mode", "--allow-gid", "--max-peers"] {
            #expect(help.output.contains(flag), "help lists \(flag)")
        }
        let subcommand = try runTool([ivserverBinary, "multi-peer", "--help"])
        #expect(subcommand.status == 0 && subcommand.output.contains("USAGE: ivserver multi-peer"))
    }

    @Test func inTheBackgroundItExitsZeroOnceServingAndWritesItsPid() throws {
        let directory = TemporaryDirectory()
        let binary = linkedBinary(in: directory)
        let socket = directory.path + "/peers.sock"
        let pidFile = directory.path + "/server.pid"
        let name = "ivs-test-daemon-\(getpid())"
        let log = directory.path + "/server.log"
        let started = try spawn([binary, "-S", socket, "-M", name, "-p", pidFile, "-l", "64K"], logPath: log)
        #expect(waitForExit(started, seconds: 20) == 0, "the starting process exits 0 once the server serves; log:\n\(readText(log))")
        // It serves already: no waiting for files to appear.
        let pid = try #require(Int32(readText(pidFile).prefix { $0 != "\n" }))
        #expect(pid != started && kill(pid, 0) == 0, "the pid file names the running server")
        #expect(fileExists(socket) && fileExists("/dev/shm/" + name))
        let peer = try RawPeer(joining: socket, vectors: 1, others: 0)
        #expect(peer.id == 0)
        // The lock names the running server too (not the starting process, which exited).
        let locked = Int32(readText("/dev/shm/\(name).lock").prefix { $0 != "\n" })
        #expect(locked == pid, "the lock says \(String(describing: locked)), the server is \(pid)")
        let second = try runTool([binary, "-F", "-S", directory.path + "/other.sock", "-M", name, "-l", "64K"])
        #expect(second.status == 1 && second.errors.contains("another ivserver (pid \(pid)) holds this lock"),
                "a second server's refusal names the live pid: \(second)")
        kill(pid, SIGTERM)
        // (Not our child: once it exits it may stay a zombie until its new parent reaps it.)
        #expect(eventually(seconds: 10) { readText(log).contains("stopped") }, "stops on SIGTERM")
        #expect(eventually(seconds: 10) { kill(pid, 0) != 0 || readText("/proc/\(pid)/stat").contains(") Z ") })
        #expect(!fileExists(socket) && !fileExists("/dev/shm/" + name) && !fileExists(pidFile), "socket, memory and pid file removed")
        #expect(readText(log).contains("stopped"))
    }

    @Test func aStartFailureInTheBackgroundIsTheCommandsStatus() throws {
        let directory = TemporaryDirectory()
        let run = try runTool([linkedBinary(in: directory), "-S", directory.path + "/missing/peers.sock", "-M", "ivs-test-fail-\(getpid())",
                               "-p", directory.path + "/pid"])
        #expect(run.status == 1)
        #expect(run.errors.contains("missing/peers.sock") && run.errors.contains("\(directory.path)/missing: the directory does not exist"),
                "the error names the path and what is missing: \(run.errors)")
        #expect(!fileExists("/dev/shm/ivs-test-fail-\(getpid())") && !fileExists(directory.path + "/pid"), "nothing left behind")
    }

    @Test func badInputIsRefusedBeforeAnythingIsMade() throws {
        let directory = TemporaryDirectory()
        let socket = directory.path + "/s"
        for (arguments, message) in [
            (["-l", "4X"], "-l"),
            (["-l", "0"], "-l"),
            (["-n", "0"], "vector count"),
            (["-n", "65"], "vector count"),
            (["-M", "a/b"], "'/'"),
            (["-M", "x", "-m", "/tmp"], "not both"),
            (["--max-peers", "0"], "--max-peers"),
            (["--max-peers", "70000"], "--max-peers"),
        ] {
            let run = try runTool([ivserverBinary, "multi-peer", "-F", "-S", socket] + arguments)
            #expect(run.status == 64, "\(arguments): status \(run.status)")
            #expect(run.errors.contains(message), "\(arguments): \(run.errors)")
        }
        #expect(directory.entries().isEmpty)
        let notADirectory = try runTool([ivserverBinary, "multi-peer", "-F", "-S", socket, "-m", "/etc/passwd"])
        #expect(notADirectory.status == 1 && notADirectory.errors.contains("is not a directory"), "\(notADirectory.errors)")
    }

    @Test func anExistingObjectIsServedWithItsContentsAndASecondServerIsRefused() throws {
        let directory = TemporaryDirectory()
        let name = "ivs-test-existing-\(getpid())"
        let path = "/dev/shm/" + name
        writeText("left by an earlier server", to: path)
        defer { unlink(path) }
        let server = try ServerProcess(multiPeer: ["-M", name, "-l", "64K"])
        #expect(server.log.contains("serving the existing shared memory \(path)"))
        let peer = try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 0)
        var bytes = [UInt8](repeating: 0, count: 25)
        #expect(pread(try #require(peer.sharedMemory).rawValue, &bytes, 25, 0) == 25)
        #expect(String(decoding: bytes, as: UTF8.self) == "left by an earlier server")
        // A second server on the same memory would split the peers' interrupts.
        let second = try runTool([ivserverBinary, "multi-peer", "-F", "-S", directory.path + "/other.sock", "-M", name])
        #expect(second.status == 1 && second.errors.contains("another ivserver"), "\(second.errors)")
        #expect(server.stop() == 0)
    }
}
