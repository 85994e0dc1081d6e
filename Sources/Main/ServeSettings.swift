import ServerCore
import IVServer

/// The values of the server's flags as plain data, and the one place that
/// checks them and turns them into a configuration. ArgumentParser fills
/// them through `ServerOptions`; `QuickServe` fills them for a plain
/// `serve` command line without ArgumentParser's start-up cost.
struct ServeSettings: Equatable {
    var layoutPath: String?
    var sharedMemoryPath = ServerConfiguration.defaultSharedMemoryPath
    var qemuSocketPath = ServerConfiguration.defaultQemuSocketPath
    var clientSocketPath = ServerConfiguration.defaultClientSocketPath
    var logLevel = LogLevelArgument.info
    var socketMode = ServerConfiguration.defaultSocketMode
    var socketGroup: UInt32?
    var sharedMemoryMode = ServerConfiguration.defaultSharedMemoryMode
    var allowedUIDs: [UInt32] = []
    var allowedGIDs: [UInt32] = []
    var handshakeTimeout = Double(ServerConfiguration.defaultHandshakeTimeoutMilliseconds) / 1000
    var maximumPending = ServerConfiguration.defaultMaximumPending
    var maximumPendingPerProcess = ServerConfiguration.defaultMaximumPendingPerProcess
    var maximumPendingPerUser = ServerConfiguration.defaultMaximumPendingPerUser
    var replaceHeldMemory = false

    /// What is wrong with these values, in the words of the usage error.
    var problem: String? {
        if let layoutPath, layoutPath.isEmpty { return "--layout must not be empty" }
        let paths = [("--shm-path", sharedMemoryPath), ("--qemu-sock", qemuSocketPath), ("--client-sock", clientSocketPath)]
        for (flag, path) in paths where path.isEmpty {
            return "\(flag) must not be empty"
        }
        if Set(paths.map(\.1)).count != paths.count {
            return "--shm-path, --qemu-sock and --client-sock must be three different paths"
        }
        guard handshakeTimeout > 0, handshakeTimeout <= 86400 else {
            return "--handshake-timeout must be more than 0 and at most 86400 seconds"
        }
        guard maximumPending >= 1 else { return "--max-pending must be at least 1" }
        guard maximumPendingPerProcess >= 1 else { return "--max-pending-per-process must be at least 1" }
        guard maximumPendingPerUser >= 1 else { return "--max-pending-per-user must be at least 1" }
        return nil
    }

    /// Builds the log and the server's configuration; a layout that cannot
    /// be used ends the process with status 2.
    func start() throws -> (ServerConfiguration, EventLog) {
        let log = EventLog(minimumSeverity: logLevel.severity)
        let (plan, source) = try LayoutOptions.load(path: layoutPath)
        if layoutPath == nil { log.log(.info, "no --layout given: using \(source == DefaultLayout.sourceName ? "the " : "")\(source)") }
        ProcessLimits.ignoreBrokenPipes()
        var configuration = ServerConfiguration(
            layout: plan, layoutSource: source, sharedMemoryPath: sharedMemoryPath,
            qemuSocketPath: qemuSocketPath, clientSocketPath: clientSocketPath,
            accessPolicy: AccessPolicy(
                serverUID: Users.currentUID, allowedUIDs: Set(allowedUIDs), allowedGIDs: Set(allowedGIDs)))
        configuration.socketMode = socketMode
        configuration.socketGroup = socketGroup
        configuration.sharedMemoryMode = sharedMemoryMode
        configuration.handshakeTimeoutMilliseconds = UInt64((handshakeTimeout * 1000).rounded(.up))
        configuration.maximumPending = maximumPending
        configuration.maximumPendingPerProcess = maximumPendingPerProcess
        configuration.maximumPendingPerUser = maximumPendingPerUser
        configuration.replaceHeldMemory = replaceHeldMemory
        return (configuration, log)
    }
}

/// `ivserver [serve] --flag value ...` read by hand when every argument is
/// a server flag with a value it accepts. swift-argument-parser finds a
/// command's options by reflection, which in a static binary costs most of
/// the start-up time (callgrind: about 78%); a server started by a launcher
/// should be ready sooner than that. Anything else — help, --version,
/// another subcommand, an unknown or repeated flag, a value the flag would
/// reject, values that fail validation — returns nil and goes to
/// ArgumentParser, so every message and exit code stays its. A test checks
/// that both readings agree.
enum QuickServe {
    /// Applies one flag's value: nil for a flag this path does not know,
    /// false for a value the flag rejects. A switch, not a table: building
    /// a dictionary of closures costs more at start-up than it saves.
    private static func apply(_ flag: String, _ value: String, to settings: inout ServeSettings) -> Bool? {
        switch flag {
        case "--layout": settings.layoutPath = value
        case "--shm-path": settings.sharedMemoryPath = value
        case "--qemu-sock": settings.qemuSocketPath = value
        case "--client-sock": settings.clientSocketPath = value
        case "--log-level":
            guard let level = LogLevelArgument(rawValue: value) else { return false }
            settings.logLevel = level
        case "--socket-mode":
            guard let mode = FileMode(argument: value) else { return false }
            settings.socketMode = mode.value
        case "--socket-group":
            guard let group = GroupArgument(argument: value) else { return false }
            settings.socketGroup = group.gid
        case "--shm-mode":
            guard let mode = FileMode(argument: value) else { return false }
            settings.sharedMemoryMode = mode.value
        case "--handshake-timeout":
            guard let seconds = Double(value) else { return false }
            settings.handshakeTimeout = seconds
        case "--max-pending":
            guard let count = Int(value) else { return false }
            settings.maximumPending = count
        case "--max-pending-per-process":
            guard let count = Int(value) else { return false }
            settings.maximumPendingPerProcess = count
        case "--max-pending-per-user":
            guard let count = Int(value) else { return false }
            settings.maximumPendingPerUser = count
        case "--allow-uid":
            guard let uid = UInt32(value) else { return false }
            settings.allowedUIDs.append(uid)
        case "--allow-gid":
            guard let group = GroupArgument(argument: value) else { return false }
            settings.allowedGIDs.append(group.gid)
        default:
            return nil
        }
        return true
    }

    /// The flags that may be given more than once.
    private static func isRepeatable(_ flag: String) -> Bool {
        flag == "--allow-uid" || flag == "--allow-gid"
    }

    static func settings(_ arguments: [String]) -> ServeSettings? {
        var rest = arguments[...]
        if rest.first == "serve" { rest = rest.dropFirst() }
        var settings = ServeSettings()
        var seen: [String] = []
        while let token = rest.popFirst() {
            guard token.hasPrefix("--") else { return nil }
            let flag: String
            let value: String
            if let equals = token.firstIndex(of: "=") {
                flag = String(token[..<equals])
                value = String(token[token.index(after: equals)...])
            } else {
                guard let next = rest.popFirst() else { return nil }
                flag = token
                value = next
            }
            guard !value.hasPrefix("-"), isRepeatable(flag) || !seen.contains(flag),
                  apply(flag, value, to: &settings) == true
            else { return nil }
            seen.append(flag)
        }
        return settings.problem == nil ? settings : nil
    }
}
