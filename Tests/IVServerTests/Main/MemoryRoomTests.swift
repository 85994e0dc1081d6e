import WireFormat
@testable import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
import IVClient
@testable import IVServer

/// A tmpfs of `size` mounted on a temporary directory while it lives (needs
/// root): a container's small /dev/shm, or a /run that other services filled.
final class SmallTmpfs {
    let mount = TemporaryDirectory()
    var path: String { mount.path }

    init(size: String) throws {
        guard Glibc.mount("tmpfs", mount.path, "tmpfs", 0, "size=\(size),mode=1777") == 0 else {
            throw TestFailure("mount tmpfs: \(String(cString: strerror(errno)))")
        }
    }

    deinit { umount2(mount.path, Int32(MNT_DETACH)) }

    /// Bytes in use, as df counts them.
    var usedBytes: UInt64 {
        var counts = statvfs()
        precondition(statvfs(mount.path, &counts) == 0)
        return UInt64(counts.f_blocks - counts.f_bfree) * UInt64(counts.f_frsize)
    }

    var freeBytes: UInt64 {
        var counts = statvfs()
        precondition(statvfs(mount.path, &counts) == 0)
        return UInt64(counts.f_bavail) * UInt64(counts.f_frsize)
    }

    /// Fills what is left with a file of its own.
    func fill() {
        let fd = open(path + "/filler", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        precondition(fd >= 0)
        let chunk = [UInt8](repeating: 1, count: 1 << 16)
        while write(fd, chunk, chunk.count) > 0 {}
        close(fd)
    }
}

/// Two regions of about 1 MiB and 2 MiB: a 4 MiB file, room to test with.
let roomyLayoutJSON = layoutJSON(
    regionJSON(name: "\"small\"", size: "1048576"),
    regionJSON(name: "\"large\"", size: "2097152", g2h: "{ \"num_nodes_lg2\": 4 }", h2g: "{ \"num_nodes_lg2\": 4 }"))

@Suite("Memory room: a small or full shared-memory filesystem (tmpfs; needs root)", .serialized,
       .enabled(if: getuid() == 0, "mounting a tmpfs needs root"))
struct MemoryRoomTests {
    @Test("a filesystem smaller than the regions: one warning at start naming it, the free and needed bytes and the remedies; ivctl status says so")
    func warningAtStart() throws {
        let tmpfs = try SmallTmpfs(size: "1m")
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, sharedMemoryPath: tmpfs.path + "/shm")
        let warnings = server.log.split(separator: "\n").filter { $0.contains("may not get all its pages") }
        #expect(warnings.count == 1, "\(server.log)")
        let line = String(warnings.first ?? "")
        #expect(line.contains("warning ivserver: shared memory \(tmpfs.path)/shm"), "\(line)")
        #expect(line.contains("the tmpfs at \(tmpfs.path) (1 MiB) has"), "\(line)")
        #expect(line.contains("SIGBUS") && line.contains("--prealloc") && line.contains("another --shm-path")
                && line.contains("mount -o remount,size="), "\(line)")
        // The header's page and every region's, less what the file holds
        // (the header's and the signalling pages, taken at start).
        let plan = try LayoutLoader.load(json: roomyLayoutJSON.utf8, source: "test")
        let touchable = plan.regions.reduce(UInt64(4096)) { $0 + (UInt64($1.endOffset - $1.beginOffset) + 4095) / 4096 * 4096 }
        var info = stat()
        #expect(stat(tmpfs.path + "/shm", &info) == 0)
        let held = UInt64(info.st_blocks) * 512
        #expect(held == 3 * 4096, "the header's page and one signalling page per region")
        #expect(line.contains("can still take \(touchable - held) bytes"), "\(line)")
        let status = try ivctl(["status"], server: server)
        #expect(status.status == 0)
        #expect(status.output.contains("shared memory SHORT OF ROOM"), "\(status.output)")
        #expect(server.stop() == 0)
    }

    @Test("under a service manager, STATUS= says the memory is short of room (systemctl status shows it)")
    func statusLine() throws {
        let tmpfs = try SmallTmpfs(size: "1m")
        let manager = try FakeServiceManager()
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, sharedMemoryPath: tmpfs.path + "/shm", manager: manager)
        #expect(try manager.waitFor("STATUS=no VM attached; 0 clients served, 0 refused; shared memory short of room: "),
                "\(manager.messages)")
        #expect(manager.messages.contains { $0.contains("free on the tmpfs at \(tmpfs.path) (1 MiB), up to") })
        #expect(server.stop() == 0)
    }

    @Test("room enough: no warning, and ivctl status says the memory has room")
    func noWarningWithRoom() throws {
        let tmpfs = try SmallTmpfs(size: "8m")
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, sharedMemoryPath: tmpfs.path + "/shm")
        #expect(!server.log.contains("may not get all its pages"), "\(server.log)")
        #expect(try ivctl(["status"], server: server).output.contains("shared memory has room"))
        #expect(server.stop() == 0)
    }

    @Test("--prealloc on too small a filesystem: exit 1 naming the filesystem, the free and needed bytes; nothing left behind")
    func preallocRefused() throws {
        let tmpfs = try SmallTmpfs(size: "2m")
        let directory = TemporaryDirectory()
        writeText(roomyLayoutJSON, to: directory.path + "/layout.json")
        let result = try runIVServer(["--prealloc", "--layout", directory.path + "/layout.json", "--shm-path", tmpfs.path + "/shm",
                                      "--qemu-sock", directory.path + "/q.sock", "--client-sock", directory.path + "/c.sock"],
                                     in: directory)
        #expect(result.status == 1, "\(result.output)")
        #expect(result.output.contains("--prealloc: the tmpfs at \(tmpfs.path) (2 MiB) has"), "\(result.output)")
        #expect(result.output.contains("free, and taking every page of the memory needs 4194304 bytes (4 MiB) more"), "\(result.output)")
        #expect(tmpfs.mount.entries().isEmpty, "no memory file, no lock: \(tmpfs.mount.entries())")
        #expect(directory.entries() == ["layout.json"], "no socket: \(directory.entries())")
        #expect(tmpfs.usedBytes == 0, "every page given back")
    }

    @Test("--prealloc with room: every page is taken at start (the filesystem's used bytes grow by the memory) and the server serves")
    func preallocTakesEveryPage() throws {
        let tmpfs = try SmallTmpfs(size: "8m")
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, arguments: ["--prealloc"], sharedMemoryPath: tmpfs.path + "/shm")
        let plan = try LayoutLoader.load(json: roomyLayoutJSON.utf8, source: "test")
        let regionBytes = plan.regions.reduce(UInt64(0)) { $0 + UInt64($1.endOffset - $1.beginOffset) }
        var info = stat()
        #expect(stat(tmpfs.path + "/shm", &info) == 0)
        #expect(UInt64(info.st_blocks) * 512 == UInt64(plan.size), "every page of the memory is held")
        #expect(tmpfs.usedBytes >= UInt64(plan.size) && UInt64(plan.size) >= regionBytes,
                "used \(tmpfs.usedBytes) (the memory and the lock file) of a \(plan.size)-byte memory")
        tmpfs.fill()
        let connection = try RegionConnection.open(region: "large", socket: server.clientSocketPath)
        try connection.memory.write([UInt8](repeating: 7, count: 1 << 20), offset: 1 << 20)
        #expect(try connection.memory.read(offset: (2 << 20) - 1, count: 1) == [7], "written through the mapping on a full filesystem")
        #expect(server.stop() == 0)
    }

    @Test("ivctl write beyond the room: exit 1 saying the filesystem is full, nothing written, the server serves the next client")
    func ivctlWriteOnFullFilesystem() throws {
        let tmpfs = try SmallTmpfs(size: "1m")
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, sharedMemoryPath: tmpfs.path + "/shm")
        let before = tmpfs.usedBytes
        let full = try runTool(["/bin/sh", "-c", "head -c 1500000 /dev/zero | \"$0\" write large --client-sock \"$1\"",
                                ivctlBinary, server.clientSocketPath])
        #expect(full.status == 1, "not 135 (SIGBUS): \(full)")
        #expect(full.errors.contains("region 'large' at \(server.clientSocketPath): the shared memory's filesystem is full (No space left on device)"),
                "\(full.errors)")
        #expect(tmpfs.usedBytes == before, "the failed reservation took nothing")
        let fits = try ivctl(["write", "large", "--offset", "8192", "fits"], server: server)
        #expect(fits.status == 0, "\(fits)")
        tmpfs.fill()
        let signal = try ivctl(["signal", "large"], server: server)
        #expect(signal.status == 0, "the signalling pages were taken at start: \(signal)")
        let connection = try RegionConnection.open(region: "large", socket: server.clientSocketPath)
        #expect(try connection.memory.read(offset: 8192, count: 4) == Array("fits".utf8))
        #expect(throws: IVClientError.self) { try connection.memory.reserve(offset: 1 << 20, count: 4096) }
        do {
            try connection.memory.reserve(offset: 1 << 20, count: 4096)
        } catch {
            guard case let .sharedMemoryFull(offset, count, code) = error.kind else { throw error }
            #expect(offset == 1 << 20 && count == 4096 && code == ENOSPC)
        }
        #expect(server.stop() == 0)
    }

    @Test("a VM that connects after the filesystem filled: the new-VM reset cannot fault, the server serves on")
    func newVMOnFullFilesystem() throws {
        let tmpfs = try SmallTmpfs(size: "1m")
        let server = try ServerProcess(layoutJSON: roomyLayoutJSON, sharedMemoryPath: tmpfs.path + "/shm")
        tmpfs.fill()
        #expect(tmpfs.freeBytes == 0)
        let mark = server.logMark()
        let vm = try connectClient(server.qemuSocketPath)
        #expect(server.waitForLog(containing: "its signalling state starts clean", after: mark), "\(server.log(after: mark))")
        #expect(try ivctl(["status"], server: server).output.contains("attached since"), "the server still serves")
        vm.close()
        #expect(server.stop() == 0)
    }

    @Test("multi-peer: -l larger than the filesystem warns; --prealloc is refused with nothing left; ivctl peer write exits 1")
    func multiPeer() throws {
        let tmpfs = try SmallTmpfs(size: "1m")
        let server = try ServerProcess(multiPeer: ["-m", tmpfs.path, "-l", "4M"])
        let warning = server.log.split(separator: "\n").first { $0.contains("may not get all its pages") }.map(String.init) ?? ""
        #expect(warning.contains("the tmpfs at \(tmpfs.path) (1 MiB)") && warning.contains("another -M name or -m directory"), "\(server.log)")
        let full = try runTool(["/bin/sh", "-c", "head -c 1500000 /dev/zero | \"$0\" peer write -S \"$1\" --offset 1000000",
                                ivctlBinary, server.peerSocketPath])
        #expect(full.status == 1, "\(full)")
        #expect(full.errors.contains("the shared memory's filesystem is full"), "\(full.errors)")
        #expect(try runTool([ivctlBinary, "peer", "list", "-S", server.peerSocketPath]).status == 0, "the server serves on")
        #expect(server.stop() == 0)

        let directory = TemporaryDirectory()
        let refused = try runIVServer(["multi-peer", "-F", "--prealloc", "-m", tmpfs.path, "-l", "4M", "-S", directory.path + "/peers.sock"],
                                      in: directory)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("--prealloc: the tmpfs at \(tmpfs.path) (1 MiB) has"), "\(refused.output)")
        #expect(tmpfs.mount.entries().isEmpty && directory.entries().isEmpty)
        #expect(tmpfs.usedBytes == 0)
    }
}
