import LinuxSystem

/// ivserver's log on standard error: the server's events and the
/// executable's own lines, as "2026-11-25T14:04:16Z info ivserver: …".
/// Lines are collected during a turn of the loop and go out in one write(2)
/// before the loop waits again: under load one turn serves many clients,
/// and a write per line was one of a handshake's few system calls. Warnings
/// and errors go out at once, with whatever was collected before them.
/// One thread only: the loop's, which is also the one that starts it.
public final class EventLog: EventSink {
    private let minimumSeverity: Severity
    private let label: String
    private var pending = LogText(capacity: EventLog.flushThreshold)
    /// "<time> <level> <label>: " for each severity, for the current second.
    private var prefixes: [[UInt8]] = []
    private var prefixSecond = -1
    /// Written early once this much is waiting, so a long turn cannot
    /// hold back (or build up) much.
    static let flushThreshold = 16 * 1024

    /// Lines for systemd's journal: "<N>ivserver: …", N the syslog
    /// priority, no time (the journal keeps its own), so that
    /// `journalctl -p warning` filters them.
    private let journal: Bool

    /// `journal` nil: when standard error is the journal (JOURNAL_STREAM).
    public init(minimumSeverity: Severity, label: String = "ivserver", journal: Bool? = nil) {
        self.minimumSeverity = minimumSeverity
        self.label = label
        self.journal = journal ?? StandardError.isJournal()
        if self.journal {
            prefixes = Severity.allCases.map { Array("<\($0.syslogPriority)>\(label): ".utf8) }
        }
    }

    deinit { flush() }

    public func isEnabled(_ severity: Severity) -> Bool { severity >= minimumSeverity }

    public func record<Event: LogEvent>(_ event: Event) {
        let severity = event.severity
        guard severity >= minimumSeverity else { return }
        pending.append(bytes: linePrefix(severity))
        event.appendMessage(to: &pending)
        pending.append(byte: UInt8(ascii: "\n"))
        if severity >= .warning || pending.bytes.count >= Self.flushThreshold { flush() }
    }

    private func linePrefix(_ severity: Severity) -> [UInt8] {
        if journal { return prefixes[severity.rank] }
        let now = SystemTime.currentSecond()
        if now != prefixSecond {
            prefixSecond = now
            prefixes = Severity.allCases.map { severity in
                var text = LogText(capacity: 48)
                text.beginLine(level: severity.name, label: label, second: now)
                return text.bytes
            }
        }
        return prefixes[severity.rank]
    }

    /// A line of the executable's own (start-up notes, errors, "stopped"),
    /// in the same format, written at once after anything collected.
    public func log(_ severity: Severity, _ message: String) {
        guard severity >= minimumSeverity else { return }
        pending.append(bytes: linePrefix(severity))
        pending.append(message)
        pending.append(byte: UInt8(ascii: "\n"))
        flush()
    }

    public func flush() {
        guard !pending.bytes.isEmpty else { return }
        StandardStream.error.write(pending.bytes)
        pending.removeAll()
    }
}
