// libFuzzer entry for the layout reader, decoder and planner (`make fuzz`).
// Any input must end in a plan or a LayoutError, never a crash; a plan must
// satisfy the layout rules, which are checked here independently.

import WireFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func layoutFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let plan = try? LayoutLoader.load(json: input, source: "fuzz") else { return 0 }
    precondition(!plan.regions.isEmpty)
    precondition(plan.size.nonzeroBitCount == 1, "size must be a power of two")
    precondition(UInt64(plan.size) >= plan.allocatedSize)
    var previousEnd = UInt64(LayoutHeader.encodedSize(regionCount: plan.regionCount))
    for region in plan.regions {
        precondition(region.beginOffset % 4096 == 0, "regions start on a page")
        precondition(UInt64(region.beginOffset) >= previousEnd, "regions must not overlap the header or each other")
        precondition(region.endOffset - region.beginOffset == region.spec.regionSize)
        precondition(region.dataOffset <= region.spec.regionSize, "signal tables must fit")
        precondition(region.managedByIndex < UInt32(plan.regionCount))
        previousEnd = UInt64(region.endOffset)
    }
    precondition(LayoutEncoder.encode(plan).count == 16 + 60 * plan.regionCount)
    return 0
}
