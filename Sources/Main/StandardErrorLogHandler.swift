import IVServer
import Logging
import Synchronization

/// ivserver's log lines on stderr: "2026-11-25T14:04:16Z info ivserver: …",
/// one write(2) per line. Timestamps are UTC, formatted once
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
        // The line is built as bytes, in one buffer: String appends cost
        // several times more, and this runs once per host client.
        var message = event.message.description
        var line = Self.clock.timestamp()
        line.reserveCapacity(line.count + label.utf8.count + message.utf8.count + 16)
        line.append(UInt8(ascii: " "))
        line += event.level.rawValue.utf8  // rawValue: interpolating the enum goes through reflection
        line.append(UInt8(ascii: " "))
        line += label.utf8
        line += ": ".utf8
        message.withUTF8 { line.append(contentsOf: $0) }
        let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        if !merged.isEmpty {
            line += (" " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")).utf8
        }
        line.append(UInt8(ascii: "\n"))
        HostSystem.writeToStandardError(line)
    }

    private static let clock = TimestampCache()
}

/// The current second as "YYYY-MM-DDTHH:MM:SSZ" in UTF-8, rebuilt when it changes.
private final class TimestampCache: Sendable {
    private let cached = Mutex<(second: Int, text: [UInt8])>((-1, []))

    func timestamp() -> [UInt8] {
        let now = HostSystem.currentSecond()
        return cached.withLock { cached in
            if cached.second != now { cached = (now, Array(HostSystem.utcTimestamp(now).utf8)) }
            return cached.text
        }
    }
}
