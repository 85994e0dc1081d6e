import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// The original C++ host client's expectations, using nothing but the
/// shared-memory fd it receives: version ≤ 0, 8-byte reply with 3 fds,
/// pread of the layout descriptor (major 2), region found by name among the
/// descriptors.
@Suite("Original host client expectations")
struct OriginalClientTests {
    @Test("find every region by name through the shared-memory fd alone")
    func findRegionThroughSharedMemory() throws {
        let server = try ServerProcess()
        for region in defaultPlan.regions {
            let reply = try haldHandshake(server.clientSocketPath, region: region.name)
            #expect(reply.version <= 0)
            try #require(reply.payload.count == 8 && reply.fds.count == 3)
            let shm = reply.fds[2]
            var descriptor = [UInt8](repeating: 0, count: 16)
            #expect(pread(shm.rawValue, &descriptor, 16, 0) == 16)
            func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
            func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
            #expect(u16(descriptor, 0) == 2, "major_version")
            let count = Int(u32(descriptor, 8))
            let table = Int(u32(descriptor, 12))
            var descriptors = [UInt8](repeating: 0, count: 60 * count)
            #expect(pread(shm.rawValue, &descriptors, descriptors.count, off_t(table)) == descriptors.count)
            let match = (0..<count).first { index in
                let name = descriptors[60 * index + 40 ..< 60 * index + 56].prefix { $0 != 0 }
                return Array(name) == Array(region.name.utf8)
            }
            let index = try #require(match, "region '\(region.name)' not found in the descriptors")
            #expect(index == region.index)
            #expect(u32(descriptors, 60 * index + 4) == region.beginOffset)
            #expect(u32(descriptors, 60 * index + 8) == region.endOffset)
            #expect(u32(descriptors, 60 * index + 12) == region.dataOffset)
        }
        #expect(server.stop() == 0)
    }
}
