import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// A hugetlbfs mount in a temporary directory, with the 2 MiB pool raised
/// by `pages` while it lives (both need root).
final class HugePagePool {
    static let pageSize: UInt64 = 2 << 20
    static let poolFile = "/proc/sys/vm/nr_hugepages"
    let mount = TemporaryDirectory()
    private let saved: String

    init(pages: Int) throws {
        saved = readText(Self.poolFile).trimmingNewline
        let current = Int(saved) ?? 0
        writeText("\(current + pages)\n", to: Self.poolFile)
        guard Self.freePages >= pages else {
            writeText(saved + "\n", to: Self.poolFile)
            throw TestFailure("the kernel gave \(Self.freePages) free huge pages, \(pages) were asked for")
        }
        guard Glibc.mount("none", mount.path, "hugetlbfs", 0, "pagesize=2M") == 0 else {
            writeText(saved + "\n", to: Self.poolFile)
            throw TestFailure("mount hugetlbfs: \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        umount2(mount.path, Int32(MNT_DETACH))
        writeText(saved + "\n", to: Self.poolFile)
    }

    static var freePages: Int {
        Int(readText("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages").trimmingNewline) ?? -1
    }
}

private extension String {
    var trimmingNewline: String { String(prefix { $0 != "\n" }) }
}

@Suite("Huge pages (hugetlbfs; needs root)", .serialized, .enabled(if: getuid() == 0, "sizing the huge page pool and mounting hugetlbfs need root"))
struct HugePageTests {
    @Test("multi-peer: -m on hugetlbfs rounds to whole huge pages, a QEMU VM attaches, the pages are taken and given back")
    func multiPeerOnHugePages() throws {
        let pool = try HugePagePool(pages: 4)
        let before = HugePagePool.freePages
        let server = try ServerProcess(multiPeer: ["-m", pool.mount.path, "-l", "3M", "-n", "2"])
        #expect(server.log.contains("(4 MiB)"), "3M rounded up to two 2 MiB pages; log:\n\(server.log)")
        #expect(HugePagePool.freePages == before - 2, "both pages taken from the pool at start")
        #expect(pool.mount.entries().isEmpty, "the file is unlinked at once")
        let qemu = try QemuProcess(qemuSocket: server.peerSocketPath, vectors: 2)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(device.sharedMemorySize == 4 << 20)
        let peer = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 1)
        let memory = try #require(peer.sharedMemory)
        var bytes: [UInt8] = (0..<16).map { UInt8(0xE0 + $0) }
        let offset = (3 << 20) + 123
        // hugetlbfs has no write(2): through a mapping, as any peer would.
        let mapping = try #require(mmap(nil, 4 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memory.rawValue, 0))
        #expect(mapping != MAP_FAILED)
        (mapping + offset).copyMemory(from: &bytes, byteCount: 16)
        #expect(try device.qemu.read(IvshmemDevice.sharedMemoryAddress + UInt64(offset), count: 16) == bytes)
        munmap(mapping, 4 << 20)
        qemu.kill()
        peer.socket.close()
        memory.close()
        #expect(server.stop() == 0)
        #expect(eventually { HugePagePool.freePages == before }, "the pages go back to the pool once nobody holds them")
    }

    @Test("vSoC mode: --shm-path on hugetlbfs, a QEMU VM sees the layout and the doorbells work")
    func vsocOnHugePages() throws {
        let pool = try HugePagePool(pages: 2)
        let plan = try LayoutLoader.load(json: unalignedLayoutJSON.utf8, source: "test")
        let server = try ServerProcess(layoutJSON: unalignedLayoutJSON, sharedMemoryPath: pool.mount.path + "/vsoc")
        var info = stat()
        #expect(stat(pool.mount.path + "/vsoc", &info) == 0 && info.st_size == 2 << 20, "64 KiB of layout in one 2 MiB page")
        let qemu = try QemuProcess(qemuSocket: server.qemuSocketPath, vectors: plan.regionCount)
        let device = try IvshmemDevice(qemu: qemu)
        #expect(device.sharedMemorySize == 2 << 20)
        let fds = try RegionFDs(server: server, plan: plan)
        try verifyVM(device, server: server, plan: plan, fds: fds, label: "hugetlbfs", checks: [2, 4, 5])
        #expect(server.stop() == 0)
        #expect(pool.mount.entries().isEmpty, "the memory file is removed at stop")
    }

    @Test("a pool too small is a clear error at start, and nothing is left")
    func poolTooSmall() throws {
        let pool = try HugePagePool(pages: 2)
        let free = HugePagePool.freePages
        let directory = TemporaryDirectory()
        let run = try runIVServer(["multi-peer", "-F", "-S", directory.path + "/peers.sock", "-m", pool.mount.path, "-l", "64M"],
                                  in: directory)
        #expect(run.status == 1)
        #expect(run.output.contains("needs 32 huge pages of 2 MiB and the pool has \(free) free"), "\(run.output)")
        #expect(run.output.contains("nr_hugepages"))
        #expect(pool.mount.entries().isEmpty && directory.entries().isEmpty, "nothing left behind")
        #expect(HugePagePool.freePages == free)
    }
}
