import WireFormat
import LinuxSystem
@testable import ServerCore
import Testing
@testable import IVServer

/// The worked example of docs/layout.md, row by row.
struct WorkedExampleRow {
    var name: String
    var begin: UInt32
    var end: UInt32
    var g2hTable: UInt32
    var g2hWord: UInt32
    var h2gTable: UInt32
    var h2gWord: UInt32
    var data: UInt32
    var managedBy: UInt32
}

let workedExample: [WorkedExampleRow] = [
    .init(name: "hwcomposer", begin: 0x1000, end: 0x5000, g2hTable: 0, g2hWord: 16, h2gTable: 20, h2gWord: 36, data: 40, managedBy: 0),
    .init(name: "fb_broadcast", begin: 0x5000, end: 0x6000, g2hTable: 0, g2hWord: 16, h2gTable: 20, h2gWord: 36, data: 40, managedBy: 0),
    .init(name: "gralloc_manager", begin: 0x6000, end: 0x10000, g2hTable: 0, g2hWord: 16, h2gTable: 20, h2gWord: 36, data: 40, managedBy: 0),
    .init(name: "gralloc_memory", begin: 0x10000, end: 0x1901_0000, g2hTable: 0, g2hWord: 4, h2gTable: 8, h2gWord: 12, data: 16, managedBy: 2),
    .init(name: "e2e_primary", begin: 0x1901_0000, end: 0x1901_4000, g2hTable: 0, g2hWord: 8, h2gTable: 12, h2gWord: 20, data: 24, managedBy: 0),
    .init(name: "e2e_secondary", begin: 0x1901_4000, end: 0x1901_8000, g2hTable: 0, g2hWord: 8, h2gTable: 12, h2gWord: 20, data: 24, managedBy: 0),
    .init(name: "e2e_manager", begin: 0x1901_8000, end: 0x1901_9000, g2hTable: 0, g2hWord: 8, h2gTable: 12, h2gWord: 20, data: 24, managedBy: 0),
    .init(name: "e2e_managed", begin: 0x1901_9000, end: 0x1901_d000, g2hTable: 0, g2hWord: 8, h2gTable: 12, h2gWord: 20, data: 24, managedBy: 6),
]

@Suite("Layout planning")
struct LayoutPlannerTests {
    @Test("the default layout reproduces the worked example field by field")
    func workedExampleTable() throws {
        let plan = LayoutLoader.loadDefault()
        #expect(plan.regions.count == workedExample.count)
        for (region, row) in zip(plan.regions, workedExample) {
            #expect(region.name == row.name)
            #expect(region.beginOffset == row.begin, "\(row.name) begin")
            #expect(region.endOffset == row.end, "\(row.name) end")
            #expect(region.guestToHost.tableOffset == row.g2hTable, "\(row.name) g2h table")
            #expect(region.guestToHost.signalledOffset == row.g2hWord, "\(row.name) g2h word")
            #expect(region.hostToGuest.tableOffset == row.h2gTable, "\(row.name) h2g table")
            #expect(region.hostToGuest.signalledOffset == row.h2gWord, "\(row.name) h2g word")
            #expect(region.dataOffset == row.data, "\(row.name) data")
            #expect(region.managedByIndex == row.managedBy, "\(row.name) managed_by")
        }
        #expect(plan.allocatedSize == 0x1901_d000)
        #expect(plan.size == 0x2000_0000)
    }

    @Test("versions, sizes and table sizes are the 2017 layout's")
    func workedExampleSpecs() {
        let plan = LayoutLoader.loadDefault()
        #expect(plan.regions.map(\.spec.currentVersion) == [1, 0, 0, 0, 1, 1, 1, 1])
        #expect(plan.regions.map(\.spec.minCompatibleVersion) == [1, 0, 0, 0, 1, 1, 1, 1])
        #expect(plan.regions.map(\.spec.guestToHostNodesLg2) == [2, 2, 2, 0, 1, 1, 1, 1])
        #expect(plan.regions.map(\.spec.hostToGuestNodesLg2) == [2, 2, 2, 0, 1, 1, 1, 1])
        #expect(plan.regions.map(\.spec.regionSize) == [16384, 4096, 40960, 419_430_400, 16384, 16384, 4096, 16384])
    }

    @Test("a total that is already a power of two is kept")
    func powerOfTwoKept() throws {
        // header page + 3 pages = 16 KiB exactly
        let plan = try LayoutPlanner.plan(LayoutSpec(regions: [
            RegionSpec(name: "a", currentVersion: 0, minCompatibleVersion: 0, regionSize: 3 * 4096, guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0),
        ]), source: "test")
        #expect(plan.allocatedSize == 16384)
        #expect(plan.size == 16384)
    }

    @Test("a region size that is not a page multiple pads the next region, not its own end")
    func unalignedRegion() throws {
        let plan = try LayoutPlanner.plan(LayoutSpec(regions: [
            RegionSpec(name: "odd", currentVersion: 0, minCompatibleVersion: 0, regionSize: 5000, guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0),
            RegionSpec(name: "next", currentVersion: 0, minCompatibleVersion: 0, regionSize: 100, guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0),
        ]), source: "test")
        #expect(plan.regions[0].beginOffset == 0x1000)
        #expect(plan.regions[0].endOffset == 0x1000 + 5000)
        #expect(plan.regions[1].beginOffset == 0x3000)
        #expect(plan.regions[1].endOffset == 0x3000 + 100)
        #expect(plan.allocatedSize == 0x4000)
        #expect(plan.size == 0x4000)
    }

    @Test("many regions push the first region past the first page")
    func headerSpillsPastOnePage() throws {
        let regions = (0..<100).map {
            RegionSpec(name: "r\($0)", currentVersion: 0, minCompatibleVersion: 0, regionSize: 4096, guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0)
        }
        let plan = try LayoutPlanner.plan(LayoutSpec(regions: regions), source: "test")
        // 16 + 60*100 = 6016 bytes of header: two pages
        #expect(plan.regions[0].beginOffset == 0x2000)
        #expect(plan.regions[99].endOffset == 0x2000 + 100 * 0x1000)
        #expect(plan.allocatedSize == 0x66000)
        #expect(plan.size == 0x80000)
    }

    @Test("signal tables that exactly fill the region are allowed")
    func tablesExactlyFill() throws {
        // lg2 0 and 0: 4 + 4 + 4 + 4 = 16 bytes
        let plan = try LayoutPlanner.plan(LayoutSpec(regions: [
            RegionSpec(name: "tiny", currentVersion: 0, minCompatibleVersion: 0, regionSize: 16, guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0),
        ]), source: "test")
        #expect(plan.regions[0].dataOffset == 16)
    }

    @Test("the largest layout a u32 can describe is accepted, one page more is not")
    func totalSizeLimit() throws {
        let fits = RegionSpec(name: "big", currentVersion: 0, minCompatibleVersion: 0, regionSize: UInt32((1 << 31) - 4096), guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0)
        let plan = try LayoutPlanner.plan(LayoutSpec(regions: [fits]), source: "test")
        #expect(plan.size == 0x8000_0000)
        var tooBig = fits
        tooBig.regionSize += 1
        #expect(throws: LayoutError.self) { try LayoutPlanner.plan(LayoutSpec(regions: [tooBig]), source: "test") }
    }
}
