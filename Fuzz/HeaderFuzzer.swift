// libFuzzer entry for the layout-header reader host clients run on the
// shared memory (`make fuzz`). The guest writes that memory too, so any
// bytes must end in a header or a HeaderError, never a crash; an accepted
// header must keep every region and table inside the file, and encode back
// to the bytes it was read from.
import WireFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func headerFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    // the file's size: the first 4 bytes when there are more, else the input's
    let fileSize = size > 4 ? UInt64(input[0]) | UInt64(input[1]) << 8 | UInt64(input[2]) << 16 | UInt64(input[3]) << 24 : UInt64(size)
    let bytes = size > 4 ? Array(input[4...]) : input
    guard let header = try? LayoutHeader.decode(bytes, fileSize: fileSize) else { return 0 }
    for region in header.regions {
        precondition(region.beginOffset <= region.endOffset && UInt64(region.endOffset) <= fileSize)
        for table in [region.guestToHost, region.hostToGuest] {
            precondition(UInt64(table.tableOffset) + 4 * UInt64(table.nodeCount) <= UInt64(region.size))
            precondition(UInt64(table.signalledOffset) + 4 <= UInt64(region.size))
        }
        precondition(region.managedByIndex < UInt32(header.regions.count))
    }
    if header.descriptorOffset == 16 {
        let again = try? LayoutHeader.decode(header.encode(), fileSize: fileSize)
        precondition(again?.regions.count == header.regions.count, "an accepted header encodes to one that is accepted")
    }
    return 0
}
