import WireFormat
import LinuxSystem
@testable import ServerCore
import Testing
@testable import IVServer

@Suite("Layout bytes")
struct LayoutEncoderTests {
    @Test("golden bytes for a two-region layout")
    func goldenBytes() throws {
        let json = """
            { "vsoc_device_regions": [
              { "device_name": "alpha", "current_version": 3, "min_compatible_version": 2, "region_size": 8192,
                "guest_to_host_signal_table": { "num_nodes_lg2": 1 }, "host_to_guest_signal_table": { "num_nodes_lg2": 2 } },
              { "device_name": "fifteen_chars_x", "current_version": 0, "min_compatible_version": 0, "region_size": 100,
                "managed_by": "alpha",
                "guest_to_host_signal_table": { "num_nodes_lg2": 0 }, "host_to_guest_signal_table": { "num_nodes_lg2": 0 } }
            ] }
            """
        // alpha is at index 0, so it cannot manage: use a three-region variant below.
        #expect(throws: LayoutError.self) { try LayoutLoader.load(json: json.utf8, source: "test") }

        let valid = json.replacingOccurrences(of: "\"managed_by\": \"alpha\",", with: "")
        let plan = try LayoutLoader.load(json: valid.utf8, source: "test")
        let golden: [UInt8] = [
            // layout descriptor: major 2, minor 0, size 0x4000, 2 regions, descriptors at 16
            0x02, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
            // alpha: versions 3/2, begin 0x1000, end 0x3000, data 0x20
            0x03, 0x00, 0x02, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00,
            // g2h: lg2 1, table 0, word 8
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00,
            // h2g: lg2 2, table 12, word 28
            0x02, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x00, 0x00,
            // "alpha" NUL-padded to 16
            0x61, 0x6C, 0x70, 0x68, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // managed_by 0
            0x00, 0x00, 0x00, 0x00,
            // fifteen_chars_x: versions 0/0, begin 0x3000, end 0x3064, data 16
            0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x64, 0x30, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x00,
            // a 15-byte name keeps its terminating NUL
            0x66, 0x69, 0x66, 0x74, 0x65, 0x65, 0x6E, 0x5F, 0x63, 0x68, 0x61, 0x72, 0x73, 0x5F, 0x78, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ]
        #expect(LayoutEncoder.encode(plan) == golden)
    }

    @Test("managed_by is written as the manager's index")
    func managedByIndex() throws {
        let plan = LayoutLoader.loadDefault()
        let bytes = LayoutEncoder.encode(plan)
        #expect(bytes.count == 16 + 60 * 8)
        func u32(_ offset: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
        }
        // managed_by is the last field of each 60-byte descriptor
        #expect((0..<8).map { u32(16 + 60 * $0 + 56) } == [0, 0, 0, 2, 0, 0, 0, 6])
        // size field
        #expect(u32(4) == 0x2000_0000)
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
