import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

@Suite("One server per VM, nothing stale", .serialized)
struct InstanceTests {
    @Test("a second ivserver on the same paths exits at once, names the first's pid and changes nothing")
    func secondServer() throws {
        let first = try ServerProcess()
        var before = stat()
        stat(first.sharedMemoryPath, &before)
        let result = try runIVServer(["--shm-path", first.sharedMemoryPath, "--qemu-sock", first.qemuSocketPath,
                                      "--client-sock", first.clientSocketPath], in: first.directory, timeout: 5)
        #expect(result.status == 1)
        #expect(result.output.contains("another ivserver (pid \(first.pid)) holds this lock"))
        var after = stat()
        stat(first.sharedMemoryPath, &after)
        #expect(before.st_ino == after.st_ino)
        #expect(try haldHandshake(first.clientSocketPath, region: "hwcomposer").fds.count == 3, "the first keeps serving")
        #expect(first.stop() == 0)
        #expect(first.directory.entries() == [])
    }

    @Test("after kill -9 the next server replaces the leftovers and serves")
    func afterKill9() throws {
        let crashed = try ServerProcess()
        crashed.stop(signal: SIGKILL)
        #expect(crashed.directory.entries() == ["client.sock", "qemu.sock", "shm", "shm.lock"], "a killed server leaves its files")
        let logPath = "/tmp/ivs-successor-\(getpid()).log"
        defer { unlink(logPath) }
        let result = try spawn([ivserverBinary, "--shm-path", crashed.sharedMemoryPath, "--qemu-sock", crashed.qemuSocketPath,
                                "--client-sock", crashed.clientSocketPath], logPath: logPath)
        #expect(eventually(seconds: 10) { readText(logPath).contains("ready:") }, "the successor never became ready")
        let log = readText(logPath)
        #expect(log.contains("removed shared memory left by an ivserver that did not stop cleanly"), "\(log)")
        #expect(log.contains("removed a socket nobody listened on left by an ivserver that did not stop cleanly: \(crashed.qemuSocketPath)"))
        #expect(try haldHandshake(crashed.clientSocketPath, region: "hwcomposer").fds.count == 3)
        kill(result, SIGTERM)
        #expect(waitForExit(result, seconds: 10) == 0)
        #expect(crashed.directory.entries() == [])
    }

    @Test("after kill -9 with a VM still attached, a fresh start refuses to split it; --replace-held-memory goes ahead")
    func heldLeftoverRefused() throws {
        let crashed = try ServerProcess()
        let qemu = try QemuProcess(qemuSocket: crashed.qemuSocketPath, vectors: defaultPlan.regionCount)
        _ = try IvshmemDevice(qemu: qemu)
        crashed.stop(signal: SIGKILL)
        var before = stat()
        #expect(stat(crashed.sharedMemoryPath, &before) == 0)
        let paths = ["--shm-path", crashed.sharedMemoryPath, "--qemu-sock", crashed.qemuSocketPath, "--client-sock", crashed.clientSocketPath]
        let refused = try runIVServer(paths, in: crashed.directory)
        #expect(refused.status == 1)
        #expect(refused.output.contains("\(crashed.sharedMemoryPath): left by an ivserver that did not stop cleanly, and process \(qemu.pid) "
            + "(\(QemuProcess.binary) -machine q35) still holds it: a new memory would split that VM from its host clients. "
            + "Stop that VM first, or start with --replace-held-memory to replace it anyway"), "\(refused.output)")
        var after = stat()
        #expect(stat(crashed.sharedMemoryPath, &after) == 0 && after.st_ino == before.st_ino, "nothing was removed")
        #expect(crashed.directory.entries() == ["client.sock", "qemu.sock", "shm"], "only its own lock file went")
        // the operator's explicit choice
        let forced = try ServerProcess(arguments: ["--replace-held-memory"], directory: crashed.directory)
        #expect(forced.log.contains("removed shared memory left by an ivserver that did not stop cleanly"))
        #expect(forced.stop() == 0)
        qemu.kill()
    }

    @Test("start-up refusals name the path and the cause, exit 1 and leave nothing", arguments: [
        "shm-is-directory", "socket-is-directory", "socket-is-file", "socket-has-listener",
    ])
    func startupRefusals(kind: String) throws {
        let directory = TemporaryDirectory()
        var listener: OwnedFD?
        let expected: String
        switch kind {
        case "shm-is-directory":
            mkdir(directory.path + "/shm", 0o755)
            expected = "\(directory.path)/shm: exists and is a directory, not a shared-memory file"
        case "socket-is-directory":
            mkdir(directory.path + "/c", 0o755)
            expected = "\(directory.path)/c: exists and is a directory, not a socket"
        case "socket-is-file":
            writeText("data", to: directory.path + "/c")
            expected = "\(directory.path)/c: exists and is a regular file, not a socket"
        default:
            listener = try UnixSocket.listen(path: directory.path + "/c")
            expected = "\(directory.path)/c: another process is listening on this socket"
        }
        let before = directory.entries()
        let result = try runIVServer(["--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/q",
                                      "--client-sock", directory.path + "/c"], in: directory)
        #expect(result.status == 1, "\(kind): \(result.output)")
        #expect(result.output.contains(expected), "\(kind): \(result.output)")
        #expect(directory.entries() == before, "\(kind): left \(directory.entries())")
        withExtendedLifetime(listener) {}
        rmdir(directory.path + "/shm")
        rmdir(directory.path + "/c")
    }

    @Test("a full /dev/shm (a 4 KiB tmpfs here) is one clear line, exit 1, nothing left",
          .enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func fullSharedMemoryFilesystem() throws {
        let directory = TemporaryDirectory()
        let mountPoint = directory.path + "/tiny"
        mkdir(mountPoint, 0o755)
        guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=4k") == 0 else {
            Issue.record("cannot mount a tmpfs here: \(String(cString: strerror(errno)))")
            return
        }
        defer {
            umount(mountPoint)
            rmdir(mountPoint)
        }
        // fill it
        writeText(String(repeating: "x", count: 4096), to: mountPoint + "/filler")
        defer { unlink(mountPoint + "/filler") }
        let result = try runIVServer(["--shm-path", mountPoint + "/shm", "--qemu-sock", directory.path + "/q",
                                      "--client-sock", directory.path + "/c"], in: directory)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.output.contains(mountPoint + "/shm"))
        #expect(result.output.contains("No space left on device"), "\(result.output)")
        #expect(directory.entries() == ["tiny"])
        #expect(directoryEntries(mountPoint) == ["filler"])
    }
}
