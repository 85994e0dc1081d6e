import Glibc
import Logging
import Synchronization

/// ivserver's log lines on stderr: "2026-11-25T14:04:16Z info ivserver: …",
/// one write(2) per line. Timestamps are UTC from gmtime_r, formatted once
/// per second: swift-log's stream handler formats local time on every line,
/// and glibc stats /etc/localtime each time, which made logging the largest
/// share of a host-client handshake's cost (see README, Performance).
struct StandardErrorLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let label: String

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        // One allocation for the line; rawValue because interpolating the
        // level enum goes through reflection.
        var line = Self.clock.timestamp()
        let message = event.message.description
        line.reserveCapacity(line.utf8.count + label.utf8.count + message.utf8.count + 16)
        line.append(" "); line.append(event.level.rawValue)
        line.append(" "); line.append(label); line.append(": "); line.append(message)
        let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        if !merged.isEmpty {
            line += " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        line.append("\n")
        writeToStandardError(line)
    }

    private static let clock = TimestampCache()
}

/// The current second as "YYYY-MM-DDTHH:MM:SSZ", rebuilt when it changes.
private final class TimestampCache: Sendable {
    private let cached = Mutex<(second: Int, text: String)>((-1, ""))

    func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return cached.withLock { cached in
            if cached.second != now.tv_sec {
                cached = (now.tv_sec, Self.format(now.tv_sec))
            }
            return cached.text
        }
    }

    private static func format(_ seconds: Int) -> String {
        var seconds = seconds
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var bytes: [UInt8] = []
        func digits(_ value: Int32, _ width: Int) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8((value / divisor) % 10))
                divisor /= 10
            }
        }
        digits(parts.tm_year + 1900, 4); bytes.append(UInt8(ascii: "-"))
        digits(parts.tm_mon + 1, 2); bytes.append(UInt8(ascii: "-"))
        digits(parts.tm_mday, 2); bytes.append(UInt8(ascii: "T"))
        digits(parts.tm_hour, 2); bytes.append(UInt8(ascii: ":"))
        digits(parts.tm_min, 2); bytes.append(UInt8(ascii: ":"))
        digits(parts.tm_sec, 2); bytes.append(UInt8(ascii: "Z"))
        return String(decoding: bytes, as: UTF8.self)
    }
}
