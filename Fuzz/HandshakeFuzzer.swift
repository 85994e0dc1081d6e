// libFuzzer entry for the HALD handshake state machine (`make fuzz`).
// The first input byte picks how the rest is split into reads; the decision
// must not depend on the split, must be final, and a grant must match what
// was asked for.

import WireFormat

let names = ["hwcomposer": 0, "e2e_primary": 4, "sixteen_chars_xx": 9]

@_cdecl("LLVMFuzzerTestOneInput")
public func handshakeFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let chunk = Int(input[0] % 7) + 1
    let stream = Array(input.dropFirst())

    var whole = ClientHandshake(regionIndexByName: names)
    let wholeDecision = whole.receive(stream)

    var pieces = ClientHandshake(regionIndexByName: names)
    var piecesDecision = ClientHandshake.Decision.needMoreInput
    var offset = 0
    while offset < stream.count {
        let next = pieces.receive(stream[offset..<min(offset + chunk, stream.count)])
        if piecesDecision != .needMoreInput { precondition(next == piecesDecision, "a decision must be final") }
        piecesDecision = next
        offset += chunk
    }
    if stream.isEmpty { piecesDecision = pieces.receive([]) }
    precondition(wholeDecision == piecesDecision, "the decision must not depend on how reads are split")

    if case let .grant(region) = wholeDecision {
        let length = Int(Int16(bitPattern: UInt16(stream[0]) | UInt16(stream[1]) << 8))
        let name = String(decoding: stream[2..<2 + length], as: UTF8.self)
        precondition(names[name] == region, "granted a region that was not asked for")
    }
    let closed = whole.receiveEndOfStream()
    if wholeDecision != .needMoreInput { precondition(closed == wholeDecision) }
    return 0
}
