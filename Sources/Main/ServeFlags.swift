import ArgumentParser
import IVServer
import LinuxSystem
import ServerCore

/// One of the server's flags, defined once: its name, what `--help` says,
/// and how its value sets `ServeSettings` (false: a value it rejects).
/// ArgumentParser's declarations (ServerOptions, AccessOptions,
/// LayoutOptions) take their name and help from here and hand their raw
/// values to `apply`; `QuickServe` reads a plain `serve` command line with
/// this table alone. A new flag is an entry here and its declaration.
struct ServeFlag: Sendable {
    let name: String
    /// Nil for a switch (no value).
    let valueName: String?
    let help: String
    let repeatable: Bool
    let apply: @Sendable (String, inout ServeSettings) -> Bool
    /// What is wrong with a value `apply` rejects, when more can be said
    /// than that it is invalid.
    let explain: (@Sendable (String) -> String)?

    init(_ name: String, value: String?, repeatable: Bool = false, help: String,
         explain: (@Sendable (String) -> String)? = nil,
         apply: @escaping @Sendable (String, inout ServeSettings) -> Bool) {
        self.name = "--" + name
        valueName = value
        self.help = help
        self.repeatable = repeatable
        self.explain = explain
        self.apply = apply
    }

    var argumentName: NameSpecification { .customLong(String(name.dropFirst(2))) }
    var argumentHelp: ArgumentHelp { ArgumentHelp(help, valueName: valueName) }

    /// Applies every value given for this flag; the usage error for one it rejects.
    func apply(_ values: [String], to settings: inout ServeSettings) throws {
        for value in values where !apply(value, &settings) {
            throw ValidationError("The value '\(value)' is invalid for '\(name) <\(valueName ?? "value")>'"
                + (explain.map { ": " + $0(value) } ?? ""))
        }
    }
}

extension ServeFlag {
    static let layout = ServeFlag("layout", value: "file", help:
        "Layout JSON file. Without it the built-in default layout (identical to conf/vsoc_mem.json) is used.") {
        $1.layoutPath = $0
        return true
    }
    static let sharedMemoryPath = ServeFlag("shm-path", value: "path", help:
        "Shared-memory file to create (one left by a killed ivserver is replaced); <path>.lock keeps a second server off these paths "
        + "(default: \(VSoCServerConfiguration.defaultSharedMemoryPath)).") {
        $1.sharedMemoryPath = $0
        return true
    }
    static let qemuSocketPath = ServeFlag("qemu-sock", value: "path", help:
        "UNIX socket QEMU's ivshmem-doorbell connects to (default: \(VSoCServerConfiguration.defaultQemuSocketPath)).") {
        $1.qemuSocketPath = $0
        return true
    }
    static let clientSocketPath = ServeFlag("client-sock", value: "path", help:
        "UNIX socket host clients connect to (default: \(VSoCServerConfiguration.defaultClientSocketPath)).") {
        $1.clientSocketPath = $0
        return true
    }
    static let logLevel = ServeFlag("log-level", value: "level", help: "trace, debug, info, warning or error (default: info).") {
        guard let level = LogLevelArgument(rawValue: $0) else { return false }
        $1.logLevel = level
        return true
    }
    static let socketMode = ServeFlag("socket-mode", value: "mode", help: "Mode of the socket files, in octal (default: 0660).") {
        guard let mode = FileMode(argument: $0) else { return false }
        $1.access.socketMode = mode.value
        return true
    }
    static let socketGroup = ServeFlag("socket-group", value: "group", help:
        "Group of the socket files (name or number); default: the server's group.", explain: GroupArgument.problem) {
        guard let group = GroupArgument(argument: $0) else { return false }
        $1.access.socketGroup = group.gid
        return true
    }
    static let sharedMemoryMode = ServeFlag("shm-mode", value: "mode", help: "Mode of the shared-memory file, in octal (default: 0600).") {
        guard let mode = FileMode(argument: $0) else { return false }
        $1.access.sharedMemoryMode = mode.value
        return true
    }
    static let allowUID = ServeFlag("allow-uid", value: "uid", repeatable: true, help:
        "Also serve peers with this user id (repeatable). Root and the server's own user are always served.") {
        guard let uid = UInt32($0) else { return false }
        $1.access.allowedUIDs.append(uid)
        return true
    }
    static let allowGID = ServeFlag("allow-gid", value: "group", repeatable: true, help:
        "Also serve peers in this group, primary or supplementary (repeatable; name or number).", explain: GroupArgument.problem) {
        guard let group = GroupArgument(argument: $0) else { return false }
        $1.access.allowedGIDs.append(group.gid)
        return true
    }
    static let handshakeTimeout = ServeFlag("handshake-timeout", value: "seconds", help:
        "Seconds a host client has to finish its handshake (default: 5).") {
        guard let seconds = Double($0) else { return false }
        $1.handshakeTimeout = seconds
        return true
    }
    static let maximumPending = ServeFlag("max-pending", value: "count", help:
        "Host clients mid-handshake at once, in all; below it every connection is greeted at once, at it the shares decide "
        + "who waits and who makes room (default: \(VSoCServerConfiguration.defaultMaximumPending)).") {
        guard let count = Int($0) else { return false }
        $1.maximumPending = count
        return true
    }
    static let maximumPendingPerProcess = ServeFlag("max-pending-per-process", value: "count", help:
        "A process's share when the server is full: at it, its new connections wait for room; over it, it makes room for "
        + "newcomers within their share (default: \(VSoCServerConfiguration.defaultMaximumPendingPerProcess)).") {
        guard let count = Int($0) else { return false }
        $1.maximumPendingPerProcess = count
        return true
    }
    static let maximumPendingPerUser = ServeFlag("max-pending-per-user", value: "count", help:
        "A user's share when the server is full: at it, the user's busiest process makes room for its other processes, and "
        + "waits itself (default: \(VSoCServerConfiguration.defaultMaximumPendingPerUser)).") {
        guard let count = Int($0) else { return false }
        $1.maximumPendingPerUser = count
        return true
    }
    static let replaceHeldMemory = ServeFlag("replace-held-memory", value: nil, help:
        "Replace a shared-memory file left by a server that did not stop cleanly even while a process (its VM) still holds it; "
        + "that VM then loses its host clients.") {
        guard $0.isEmpty else { return false }
        $1.replaceHeldMemory = true
        return true
    }
    static let preallocate = ServeFlag("prealloc", value: nil, help:
        "Take every page of the shared memory from its filesystem at start (as QEMU's prealloc=on), so that no guest or host "
        + "client can die of SIGBUS when the filesystem is full later; a filesystem without the room refuses the start (exit 1).") {
        guard $0.isEmpty else { return false }
        $1.preallocate = true
        return true
    }

    /// Every flag of `serve` (and of `launch`, `qemu-args`, `layout`).
    static let all: [ServeFlag] = [
        layout, sharedMemoryPath, qemuSocketPath, clientSocketPath, logLevel, socketMode, socketGroup, sharedMemoryMode,
        allowUID, allowGID, handshakeTimeout, maximumPending, maximumPendingPerProcess, maximumPendingPerUser, replaceHeldMemory,
        preallocate,
    ]
}
