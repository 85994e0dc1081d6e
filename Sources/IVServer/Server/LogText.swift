import Synchronization

/// Builds log text as UTF-8 bytes: integers without the generic
/// `description` machinery, strings without intermediate copies. Log lines
/// are built this way because formatting was a measurable share of a
/// handshake's cost (README, Performance).
public struct LogText {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 160) { bytes.reserveCapacity(capacity) }

    public mutating func append(_ text: String) {
        // Literals and native strings have contiguous UTF-8: no copy of
        // the String, no retain of its storage.
        if text.utf8.withContiguousStorageIfAvailable({ bytes.append(contentsOf: $0) }) == nil {
            bytes.append(contentsOf: text.utf8)
        }
    }

    public mutating func append(byte: UInt8) { bytes.append(byte) }

    public mutating func append(bytes more: [UInt8]) { bytes.append(contentsOf: more) }

    public mutating func append<T: BinaryInteger>(_ value: T) {
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

    /// Starts a log line: "2026-11-25T14:04:16Z info ivserver: " (UTC).
    public mutating func beginLine(level: String, label: String) {
        LogClock.shared.appendTimestamp(to: &bytes)
        bytes.append(UInt8(ascii: " "))
        append(level)
        bytes.append(UInt8(ascii: " "))
        append(label)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(UInt8(ascii: " "))
    }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// The current second as "YYYY-MM-DDTHH:MM:SSZ", formatted once per second:
/// a local-time formatter (swift-log's default) makes glibc stat
/// /etc/localtime on every line.
private final class LogClock: Sendable {
    static let shared = LogClock()
    private let cached = Mutex<(second: Int, text: [UInt8])>((-1, []))

    func appendTimestamp(to bytes: inout [UInt8]) {
        let now = HostSystem.currentSecond()
        cached.withLock { cached in
            if cached.second != now { cached = (now, Array(HostSystem.utcTimestamp(now).utf8)) }
            bytes.append(contentsOf: cached.text)
        }
    }
}
