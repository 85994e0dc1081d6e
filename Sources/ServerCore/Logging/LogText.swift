import LinuxSystem

/// Builds log text as UTF-8 bytes: integers without the generic
/// `description` machinery, strings without intermediate copies. Log lines
/// are built this way because formatting was a measurable share of a
/// handshake's cost (docs/performance.md).
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

    /// Inlinable, so that it is specialized where it is called (another
    /// module); the digits are written by one concrete function.
    @inlinable
    public mutating func append<T: BinaryInteger>(_ value: T) {
        appendDecimal(negative: value < 0, magnitude: UInt64(value.magnitude))
    }

    @usableFromInline
    mutating func appendDecimal(negative: Bool, magnitude: UInt64) {
        if negative { bytes.append(UInt8(ascii: "-")) }
        var divisor: UInt64 = 1
        while divisor <= magnitude / 10 { divisor *= 10 }
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8((magnitude / divisor) % 10))
            divisor /= 10
        }
    }

    public mutating func append(_ peer: PeerCredentials?) {
        guard let peer else { return append("unknown peer") }
        append("pid "); append(peer.pid)
        append(" uid "); append(peer.uid)
        append(" gid "); append(peer.gid)
    }

    /// Starts a log line: "2026-11-25T14:04:16Z info ivserver: " (UTC).
    public mutating func beginLine(level: String, label: String, second: Int) {
        appendTimestamp(second)
        bytes.append(UInt8(ascii: " "))
        append(level)
        bytes.append(UInt8(ascii: " "))
        append(label)
        bytes.append(UInt8(ascii: ":"))
        bytes.append(UInt8(ascii: " "))
    }

    /// `second` since the epoch as "YYYY-MM-DDTHH:MM:SSZ".
    mutating func appendTimestamp(_ second: Int) {
        let time = UTCTime(secondsSinceEpoch: second)
        appendPadded(time.year, width: 4); bytes.append(UInt8(ascii: "-"))
        appendPadded(time.month, width: 2); bytes.append(UInt8(ascii: "-"))
        appendPadded(time.day, width: 2); bytes.append(UInt8(ascii: "T"))
        appendPadded(time.hour, width: 2); bytes.append(UInt8(ascii: ":"))
        appendPadded(time.minute, width: 2); bytes.append(UInt8(ascii: ":"))
        appendPadded(time.second, width: 2); bytes.append(UInt8(ascii: "Z"))
    }

    private mutating func appendPadded(_ value: Int, width: Int) {
        var digits = 1
        var rest = value / 10
        while rest > 0 { digits += 1; rest /= 10 }
        for _ in digits..<max(width, digits) { bytes.append(UInt8(ascii: "0")) }
        append(value)
    }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }
}

/// A UTC calendar time, computed from seconds since the epoch without the
/// C library (gmtime_r reads /etc/localtime on first use, a file ivserver
/// has no need for). Proleptic Gregorian calendar, as gmtime.
struct UTCTime: Equatable {
    var year, month, day, hour, minute, second: Int

    init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second) = (year, month, day, hour, minute, second)
    }

    init(secondsSinceEpoch: Int) {
        var days = secondsSinceEpoch / 86_400
        var seconds = secondsSinceEpoch % 86_400
        if seconds < 0 { seconds += 86_400; days -= 1 }
        hour = seconds / 3600
        minute = seconds % 3600 / 60
        second = seconds % 60
        // Days to a civil date, with years starting on 1 March (so the leap
        // day is last) in 400-year eras of 146,097 days.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthFromMarch = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * monthFromMarch + 2) / 5 + 1
        month = monthFromMarch < 10 ? monthFromMarch + 3 : monthFromMarch - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }
}
