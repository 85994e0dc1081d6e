/// The binary vSoC 2.0 header: the 16-byte layout descriptor followed by one
/// 60-byte region descriptor per region, all little-endian (docs/layout.md,
/// "Binary structures"). The guest driver and every host client parse these
/// bytes, so the field order below is the ABI.
public enum LayoutEncoder {
    public static let majorVersion: UInt16 = 2
    public static let minorVersion: UInt16 = 0
    static let nameFieldSize = 16

    /// The header bytes: 16 + 60 × regionCount.
    public static func encode(_ plan: LayoutPlan) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerSize(regionCount: plan.regionCount))
        // layout descriptor
        out.appendLittleEndian(majorVersion)
        out.appendLittleEndian(minorVersion)
        out.appendLittleEndian(plan.size)
        out.appendLittleEndian(UInt32(plan.regionCount))
        out.appendLittleEndian(UInt32(LayoutPlanner.layoutDescriptorSize))  // vsoc_region_desc_offset
        for region in plan.regions {
            // region descriptor
            out.appendLittleEndian(region.spec.currentVersion)
            out.appendLittleEndian(region.spec.minCompatibleVersion)
            out.appendLittleEndian(region.beginOffset)
            out.appendLittleEndian(region.endOffset)
            out.appendLittleEndian(region.dataOffset)
            out.appendSignalTable(region.guestToHost)
            out.appendSignalTable(region.hostToGuest)
            var name = Array(region.name.utf8.prefix(nameFieldSize - 1))
            name += Array(repeating: 0, count: nameFieldSize - name.count)  // NUL-terminated, NUL-padded
            out += name
            out.appendLittleEndian(region.managedByIndex)
        }
        return out
    }

    public static func headerSize(regionCount: Int) -> Int {
        Int(LayoutPlanner.layoutDescriptorSize + LayoutPlanner.regionDescriptorSize * UInt64(regionCount))
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        for _ in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }

    fileprivate mutating func appendSignalTable(_ table: SignalTableLayout) {
        appendLittleEndian(table.nodesLg2)
        appendLittleEndian(table.tableOffset)
        appendLittleEndian(table.signalledOffset)
    }
}
