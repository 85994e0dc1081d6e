import ServerCore
import IVServer
import LinuxSystem

/// Who may reach a server, as its flags say (`serve` and `multi-peer`
/// share these): the files' modes and group, and who besides root and the
/// server's user is served.
struct AccessValues: Equatable {
    var socketMode = AccessDefaults.socketMode
    var socketGroup: UInt32?
    var sharedMemoryMode = AccessDefaults.sharedMemoryMode
    var allowedUIDs: [UInt32] = []
    var allowedGIDs: [UInt32] = []

    var policy: AccessPolicy {
        AccessPolicy(serverUID: Users.currentUID, allowedUIDs: Set(allowedUIDs), allowedGIDs: Set(allowedGIDs))
    }
}

/// The values of the server's flags as plain data, and the one place that
/// checks them and turns them into a configuration. ServeFlag's table sets
/// them, from ArgumentParser's declarations or from `QuickServe`.
struct ServeSettings: Equatable {
    var layoutPath: String?
    var sharedMemoryPath = VSoCServerConfiguration.defaultSharedMemoryPath
    var qemuSocketPath = VSoCServerConfiguration.defaultQemuSocketPath
    var clientSocketPath = VSoCServerConfiguration.defaultClientSocketPath
    var logLevel = LogLevelArgument.info
    var access = AccessValues()
    var handshakeTimeout = Double(VSoCServerConfiguration.defaultHandshakeTimeoutMilliseconds) / 1000
    var maximumPending = VSoCServerConfiguration.defaultMaximumPending
    var maximumPendingPerProcess = VSoCServerConfiguration.defaultMaximumPendingPerProcess
    var maximumPendingPerUser = VSoCServerConfiguration.defaultMaximumPendingPerUser
    var replaceHeldMemory = false
    var preallocate = false

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
    func start() throws -> (VSoCServerConfiguration, EventLog) {
        let log = EventLog(minimumSeverity: logLevel.severity)
        let (plan, source) = try LayoutOptions.load(path: layoutPath)
        if layoutPath == nil { log.log(.info, "no --layout given: using \(source == DefaultLayout.sourceName ? "the " : "")\(source)") }
        ProcessLimits.ignoreBrokenPipes()
        var configuration = VSoCServerConfiguration(
            layout: plan, layoutSource: source, sharedMemoryPath: sharedMemoryPath,
            qemuSocketPath: qemuSocketPath, clientSocketPath: clientSocketPath, accessPolicy: access.policy)
        configuration.socketMode = access.socketMode
        configuration.socketGroup = access.socketGroup
        configuration.sharedMemoryMode = access.sharedMemoryMode
        configuration.handshakeTimeoutMilliseconds = UInt64(SystemTime.milliseconds(seconds: handshakeTimeout))
        configuration.maximumPending = maximumPending
        configuration.maximumPendingPerProcess = maximumPendingPerProcess
        configuration.maximumPendingPerUser = maximumPendingPerUser
        configuration.replaceHeldMemory = replaceHeldMemory
        configuration.preallocate = preallocate
        return (configuration, log)
    }
}

/// `ivserver [serve] --flag value ...` read by hand, with ServeFlag's
/// table, when every argument is a server flag with a value it accepts.
/// swift-argument-parser finds a command's options by reflection, which in
/// a static binary costs most of the start-up time (callgrind: about 78%);
/// a server started by a launcher should be ready sooner than that.
/// Anything else — help, --version, another subcommand, an unknown or
/// repeated flag, a value the flag would reject, values that fail
/// validation — returns nil and goes to ArgumentParser, so every message
/// and exit code stays its. A test checks that both readings agree.
enum QuickServe {
    static func settings(_ arguments: [String]) -> ServeSettings? {
        var rest = arguments[...]
        if rest.first == "serve" { rest = rest.dropFirst() }
        var settings = ServeSettings()
        var seen: [String] = []
        while let token = rest.popFirst() {
            guard token.hasPrefix("--") else { return nil }
            let name: Substring
            var value: Substring?
            if let equals = token.firstIndex(of: "=") {
                name = token[..<equals]
                value = token[token.index(after: equals)...]
            } else {
                name = token[...]
            }
            // A linear search of 15 entries: a dictionary would cost more
            // to build at start-up than it saves.
            guard let flag = ServeFlag.all.first(where: { $0.name == name }), flag.repeatable || !seen.contains(flag.name) else { return nil }
            if flag.valueName == nil {
                guard value == nil else { return nil }
            } else if value == nil {
                value = rest.popFirst()?[...]
            }
            guard let text = value.map(String.init) ?? (flag.valueName == nil ? "" : nil), !text.hasPrefix("-"),
                  flag.apply(text, &settings)
            else { return nil }
            seen.append(flag.name)
        }
        return settings.problem == nil ? settings : nil
    }
}
