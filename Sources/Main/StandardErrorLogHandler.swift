import IVServer
import Logging

/// ivserver's log lines on stderr, in the format of the server's own event
/// log (`EventLog`): "2026-11-25T14:04:16Z info ivserver: …", one write(2)
/// per line. Used for what the executable itself says (start-up, errors,
/// "stopped"); the server's events go through `EventLog`, which batches.
struct StandardErrorLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let label: String

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = LogText()
        line.beginLine(level: event.level.rawValue, label: label)  // rawValue: interpolating the enum goes through reflection
        line.append(event.message.description)
        let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        if !merged.isEmpty {
            line.append(" " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        line.append(byte: UInt8(ascii: "\n"))
        HostSystem.writeToStandardError(line.bytes)
    }
}
