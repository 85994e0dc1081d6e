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
        let now = HostSystem.currentSecond()
        return cached.withLock { cached in
            if cached.second != now { cached = (now, HostSystem.utcTimestamp(now)) }
            return cached.text
        }
    }
}
