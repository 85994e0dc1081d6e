import LinuxSystem

/// How much a log line matters, from the bytes on the wire to failures.
public enum Severity: Comparable, CaseIterable, Sendable {
    /// Bytes in and out.
    case trace
    /// Each protocol step of each connection, checks, timers.
    case debug
    case info, warning, error

    /// 0 for trace up to 4 for error.
    var rank: Int {
        switch self {
        case .trace: return 0
        case .debug: return 1
        case .info: return 2
        case .warning: return 3
        case .error: return 4
        }
    }

    /// syslog(3)'s priority, for the journal.
    var syslogPriority: Int {
        switch self {
        case .trace, .debug: return 7
        case .info: return 6
        case .warning: return 4
        case .error: return 3
        }
    }

    /// As the log and --log-level name it.
    public var name: String {
        switch self {
        case .trace: return "trace"
        case .debug: return "debug"
        case .info: return "info"
        case .warning: return "warning"
        case .error: return "error"
        }
    }
}

/// Something a server reports as it runs: each server has its own kinds
/// (and the core its shared ones); the executable decides how they are
/// logged, and tests can watch them directly.
public protocol LogEvent: Sendable, CustomStringConvertible {
    var severity: Severity { get }
    /// The message, appended as bytes: events logged once per connection
    /// are built without generic formatting or a String.
    func appendMessage(to text: inout LogText)
}

extension LogEvent {
    public var description: String {
        var text = LogText()
        appendMessage(to: &text)
        return text.string
    }
}

/// Where a server's events go. `flush` is called once per turn of the
/// loop, just before it waits, and when the server stops, so a sink may
/// hold events back within a turn.
public protocol EventSink: AnyObject {
    func record<Event: LogEvent>(_ event: Event)
    func flush()
    /// Whether events of `severity` are kept: debug and trace events are
    /// not even built when they would be dropped.
    func isEnabled(_ severity: Severity) -> Bool
}

/// "pid 4242 uid 1000 gid 1000", or "unknown peer".
public func describe(_ peer: PeerCredentials?) -> String {
    peer?.description ?? "unknown peer"
}

/// "SIGTERM", or "signal 12".
public func signalName(_ signal: Int32) -> String {
    switch signal {
    case 1: return "SIGHUP"
    case 2: return "SIGINT"
    case 9: return "SIGKILL"
    case 10: return "SIGUSR1"
    case 12: return "SIGUSR2"
    case 15: return "SIGTERM"
    default: return "signal \(signal)"
    }
}
