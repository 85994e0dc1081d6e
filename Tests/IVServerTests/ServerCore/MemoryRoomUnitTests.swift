import WireFormat
@testable import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
import IVClient
@testable import IVServer

@Suite("Memory room: the pure parts")
struct MemoryRoomUnitTests {
    @Test("the mount of a device is read from mountinfo: the closest mount point holding the path, escapes undone")
    func mountInfo() {
        let text = """
            22 1 0:21 / / rw - overlay overlay rw
            30 22 0:26 / /dev/shm rw,nosuid,nodev - tmpfs shm rw,size=65536k
            31 22 0:26 / /srv/with\\040space rw - tmpfs shm rw
            40 22 0:27 / /run rw - tmpfs tmpfs rw
            """
        let device = dev_t((0 << 8) | 26)
        #expect(MemoryPages.mount(inMountInfo: text, device: device, path: "/dev/shm/ivserver-vm1")! == ("tmpfs", "/dev/shm"))
        #expect(MemoryPages.mount(inMountInfo: text, device: device, path: "/srv/with space/shm")! == ("tmpfs", "/srv/with space"))
        #expect(MemoryPages.mount(inMountInfo: text, device: dev_t(27), path: nil)! == ("tmpfs", "/run"))
        #expect(MemoryPages.mount(inMountInfo: text, device: dev_t(99), path: "/x") == nil)
    }

    @Test("sizes at a glance: exact when whole, else to a tenth")
    func sizes() {
        #expect(MemorySize.approximate(512 << 20) == "512 MiB")
        #expect(MemorySize.approximate(4_190_208) == "4.0 MiB")
        #expect(MemorySize.approximate(419_549_184) == "400.1 MiB")
        #expect(MemorySize.approximate(100) == "100 bytes")
        #expect(MemorySize.both(4_194_304) == "4194304 bytes (4 MiB)")
    }

    @Test("the pages taken at start hold every signalling word the reset and the clients touch")
    func signallingRanges() throws {
        let plan = try LayoutLoader.load(json: unalignedLayoutJSON.utf8, source: "test")
        let ranges = SignallingReset.signallingRanges(of: plan)
        for words in SignallingReset.words(of: plan) {
            for offset in [words.guestToHostSignalled, words.hostToGuestSignalled] + words.tableSlots {
                #expect(ranges.contains { $0.contains(UInt64(offset)) && $0.contains(UInt64(offset + 3)) }, "word at \(offset)")
            }
        }
        for (range, region) in zip(ranges, plan.regions) {
            #expect(range.lowerBound >= UInt64(region.beginOffset) && range.upperBound <= UInt64(region.beginOffset + region.dataOffset))
        }
    }
}
