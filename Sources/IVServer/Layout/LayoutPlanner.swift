import WireFormat

/// A region with every offset computed: its spec and the descriptor the
/// header will hold for it (VSoCFormat's `RegionDescriptor`, so the plan
/// and the bytes share one set of fields).
public struct PlannedRegion: Equatable, Sendable {
    public var index: Int
    public var spec: RegionSpec
    public var descriptor: RegionDescriptor

    public var name: String { spec.name }
    /// Absolute, page aligned.
    public var beginOffset: UInt32 { descriptor.beginOffset }
    /// Absolute, begin + region_size (not padded).
    public var endOffset: UInt32 { descriptor.endOffset }
    public var guestToHost: SignalTableLayout { descriptor.guestToHost }
    public var hostToGuest: SignalTableLayout { descriptor.hostToGuest }
    /// Relative to the region's begin: where the signal tables end.
    public var dataOffset: UInt32 { descriptor.dataOffset }
    /// Index of the managing region; 0 when unmanaged.
    public var managedByIndex: UInt32 { descriptor.managedByIndex }
    public var size: UInt32 { descriptor.size }
}

/// The computed layout: what the shared-memory header will say.
public struct LayoutPlan: Equatable, Sendable {
    public var regions: [PlannedRegion]
    /// The end of the last region, padded to a page.
    public var allocatedSize: UInt64
    /// allocatedSize rounded up to a power of two: the shared memory's size.
    public var size: UInt32

    public var regionCount: Int { regions.count }
}

/// The allocation rules of the vSoC 2.0 layout (docs/layout.md). Pure
/// arithmetic: no I/O, so it is tested against the worked example directly.
public enum LayoutPlanner {
    public static let pageSize: UInt64 = 4096
    /// device_name is a 16-byte field that keeps a terminating NUL.
    public static let maximumNameLength = 15
    /// A larger table could never fit a u32-sized region anyway.
    public static let maximumNodesLg2 = LayoutHeader.maximumNodesLg2
    /// The largest power of two a u32 `size` can hold.
    public static let maximumTotalSize: UInt64 = 1 << 31

    /// Plans a decoded layout, or throws every problem found.
    public static func plan(_ spec: LayoutSpec, source: String) throws(LayoutError) -> LayoutPlan {
        var problems = validate(spec.regions, names: spec.regions.map(\.name))
        if spec.regions.isEmpty {
            problems.append(LayoutProblem(subject: nil, message: "a layout needs at least one region"))
        }
        guard problems.isEmpty else { throw LayoutError(source: source, problems: problems) }
        let plan = allocate(spec.regions)
        guard plan.allocatedSize <= maximumTotalSize else {
            throw LayoutError(source: source, problems: [LayoutProblem(
                subject: nil,
                message: "regions need \(plan.allocatedSize) bytes (\(hex0x(plan.allocatedSize))), more than the 2 GiB a 32-bit layout can describe")])
        }
        return plan
    }

    /// The rules that need no offsets. `regions` has nil for regions the
    /// decoder rejected and `names` nil where even the name was unreadable;
    /// indices are kept, so every other problem is still found in one pass.
    static func validate(_ regions: [RegionSpec?], names: [String?]) -> [LayoutProblem] {
        var problems: [LayoutProblem] = []
        var firstIndexByName: [String: Int] = [:]
        for case let (index, name?) in names.enumerated() {
            let subject = "region '\(name)'"
            let length = name.utf8.count
            if length == 0 || length > maximumNameLength {
                problems.append(LayoutProblem(subject: "region #\(index)", message: "device_name '\(name)' is \(length) bytes; it must be 1 to \(maximumNameLength) bytes"))
            }
            if name.utf8.contains(0) {
                problems.append(LayoutProblem(subject: subject, message: "device_name must not contain a NUL character"))
            }
            if let first = firstIndexByName[name] {
                problems.append(LayoutProblem(subject: subject, message: "device_name duplicates region #\(first) (this is region #\(index))"))
            } else {
                firstIndexByName[name] = index
            }
        }
        for case let (index, region?) in regions.enumerated() {
            let subject = "region '\(region.name)'"
            let tables = signalTablesSize(region)
            if tables > UInt64(region.regionSize) {
                problems.append(LayoutProblem(subject: subject, message: "signal tables (\(tables) bytes) overflow region_size \(region.regionSize)"))
            }
            guard let manager = region.managedBy else { continue }
            guard let managerIndex = firstIndexByName[manager] else {
                problems.append(LayoutProblem(subject: subject, message: "managed_by names '\(manager)', which is not a region of this layout"))
                continue
            }
            if managerIndex == index {
                problems.append(LayoutProblem(subject: subject, message: "managed_by names the region itself"))
            } else if managerIndex == 0 {
                problems.append(LayoutProblem(subject: subject, message: "managed_by names '\(manager)', region #0; index 0 means \"unmanaged\" in the binary layout, so a managing region cannot be first"))
            }
        }
        return problems
    }

    /// Offsets and sizes for valid regions (docs/layout.md, "Allocation").
    static func allocate(_ regions: [RegionSpec]) -> LayoutPlan {
        let headerEnd = UInt64(LayoutHeader.encodedSize(regionCount: regions.count))
        var offset = roundUp(headerEnd, to: pageSize)
        var planned: [PlannedRegion] = []
        for (index, region) in regions.enumerated() {
            let guestToHost = SignalTableLayout(
                nodesLg2: region.guestToHostNodesLg2, tableOffset: 0,
                signalledOffset: 4 << region.guestToHostNodesLg2)
            let hostToGuestStart = guestToHost.signalledOffset + 4
            let hostToGuest = SignalTableLayout(
                nodesLg2: region.hostToGuestNodesLg2, tableOffset: hostToGuestStart,
                signalledOffset: hostToGuestStart + 4 << region.hostToGuestNodesLg2)
            let managedBy = region.managedBy.flatMap { name in regions.firstIndex { $0.name == name } } ?? 0
            let end = offset + UInt64(region.regionSize)
            planned.append(PlannedRegion(index: index, spec: region, descriptor: RegionDescriptor(
                currentVersion: region.currentVersion, minCompatibleVersion: region.minCompatibleVersion,
                beginOffset: UInt32(truncatingIfNeeded: offset), endOffset: UInt32(truncatingIfNeeded: end),
                dataOffset: hostToGuest.signalledOffset + 4, guestToHost: guestToHost, hostToGuest: hostToGuest,
                name: region.name, managedByIndex: UInt32(managedBy))))
            offset = roundUp(end, to: pageSize)
        }
        let total = nextPowerOfTwo(offset)
        return LayoutPlan(regions: planned, allocatedSize: offset, size: UInt32(truncatingIfNeeded: total))
    }

    /// Both node tables and both signal words.
    static func signalTablesSize(_ region: RegionSpec) -> UInt64 {
        (4 << UInt64(region.guestToHostNodesLg2)) + 4 + (4 << UInt64(region.hostToGuestNodesLg2)) + 4
    }

    static func roundUp(_ value: UInt64, to alignment: UInt64) -> UInt64 {
        (value + alignment - 1) / alignment * alignment
    }

    /// The smallest power of two >= value; a power of two is kept.
    static func nextPowerOfTwo(_ value: UInt64) -> UInt64 {
        guard value > 1 else { return 1 }
        return 1 << (64 - (value - 1).leadingZeroBitCount)
    }
}
