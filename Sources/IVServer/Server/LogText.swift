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
        var magnitude = value.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude != 0 && count < buffer.count
            for index in stride(from: count - 1, through: 0, by: -1) { bytes.append(buffer[index]) }
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
