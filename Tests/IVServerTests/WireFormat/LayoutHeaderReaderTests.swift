import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer
import WireFormat

@Suite("Layout header reader")
struct LayoutHeaderReaderTests {
    let plan = LayoutLoader.loadDefault()

    @Test("decoding what the server encodes gives the same header, for the default and an unaligned layout")
    func roundTrip() throws {
        for plan in [plan, try LayoutLoader.load(json: unalignedLayoutJSON.utf8, source: "test")] {
            let bytes = LayoutEncoder.encode(plan)
            #expect(try LayoutHeader.encodedLength(descriptorBytes: bytes.prefix(16), fileSize: UInt64(plan.size)) == bytes.count)
            #expect(try LayoutHeader.decode(bytes, fileSize: UInt64(plan.size)) == LayoutEncoder.header(plan))
        }
    }

    func problems(_ bytes: [UInt8], fileSize: UInt64 = 0x2000_0000) -> String {
        do {
            _ = try LayoutHeader.decode(bytes, fileSize: fileSize)
            return "(accepted)"
        } catch {
            return error.description
        }
    }

    func patched(_ offset: Int, _ value: UInt32) -> [UInt8] {
        var bytes = LayoutEncoder.encode(plan)
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        return bytes
    }

    @Test("each broken field is named")
    func brokenHeaders() {
        var version1 = LayoutEncoder.encode(plan)
        version1[0] = 1
        #expect(problems(version1) == "layout version 1.0 is not supported (expected 2.x)")
        #expect(problems(Array(LayoutEncoder.encode(plan).prefix(10))).contains("too short for the 16-byte layout descriptor"))
        #expect(problems(LayoutEncoder.encode(plan), fileSize: 4096).contains("the layout says the shared memory is 536870912 bytes but the file has 4096"))
        #expect(problems(patched(8, 100_000_000)).contains("region descriptors at offset 16 end at"))
        // region 1's end (descriptor 1 starts at 76; end is at +8)
        #expect(problems(patched(76 + 8, 0x3000_0000)) .contains("region #1 'fb_broadcast' spans"))
        // region 0's guest_to_host table: 2^20 nodes
        #expect(problems(patched(16 + 16, 20)).contains("region #0 'hwcomposer': guest_to_host table or its signal word lies outside"))
        #expect(problems(patched(16 + 20, 2)).contains("not 4-byte aligned"))
        #expect(problems(patched(16 + 56, 9)).contains("managed_by index 9 is not a region"))
        #expect(problems(Array(LayoutEncoder.encode(plan).prefix(100))).contains("the header needs 496 bytes, only 100 were read"))
    }

    @Test("the HALD request bytes and the version rule")
    func haldProtocol() {
        #expect(HALDProtocol.request(region: "ab") == [2, 0, 0x61, 0x62])
        #expect(HALDProtocol.request(region: "") == nil)
        #expect(HALDProtocol.request(region: String(repeating: "x", count: 17)) == nil)
        #expect(HALDProtocol.isSupported(serverVersion: 0))
        #expect(!HALDProtocol.isSupported(serverVersion: 1))
        #expect(HALDProtocol.isSupported(serverVersion: UInt32.max), "read as -1, as the C++ clients compare")
    }
}
