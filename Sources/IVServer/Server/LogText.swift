/// Builds a log line's text as UTF-8 bytes: appending integers without the
/// generic `description` machinery and strings without intermediate copies.
/// Used for the events logged once per connection, where formatting was a
/// measurable share of a handshake's cost.
struct LogText {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 160) { bytes.reserveCapacity(capacity) }

    mutating func append(_ text: String) {
        var text = text
        text.withUTF8 { bytes.append(contentsOf: $0) }
    }

    mutating func append<T: BinaryInteger>(_ value: T) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = UInt64(value.magnitude)
        var divisor: UInt64 = 1
        while divisor <= magnitude / 10 { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8((magnitude / divisor) % 10))
            divisor /= 10
        }
    }

    mutating func append(_ peer: PeerCredentials?) {
        guard let peer else { return append("unknown peer") }
        append("pid "); append(peer.pid)
        append(" uid "); append(peer.uid)
        append(" gid "); append(peer.gid)
    }

    var string: String { String(decoding: bytes, as: UTF8.self) }
}
