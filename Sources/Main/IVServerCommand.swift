import ArgumentParser
import Glibc
import IVServer
import Logging

@main
struct IVServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ivserver",
        abstract: "Host-side shared-memory server for a vSoC (Cuttlefish-style) VM.",
        discussion: """
            Creates the shared memory described by a layout, one eventfd pair per region, \
            and serves QEMU's ivshmem-doorbell device on the QEMU socket and host clients \
            (the HALD handshake) on the client socket until SIGINT, SIGTERM or SIGHUP, \
            then removes the shared memory and both sockets.

            Attach a VM with:
              -chardev socket,path=QEMU_SOCK,id=ivsh -device ivshmem-doorbell,chardev=ivsh,vectors=REGIONS

            Exit status: 0 after a clean stop, 1 on a runtime failure (a path that \
            cannot be created, a socket in use), 2 for a layout that cannot be read or \
            is invalid, 64 for bad arguments.
            """,
        version: IVServerVersion.string
    )

    @Option(name: .customLong("layout"), help: ArgumentHelp(
        "Layout JSON file. Without it the built-in default layout (identical to conf/vsoc_mem.json) is used.",
        valueName: "file"))
    var layoutPath: String?

    @Option(name: .customLong("shm-path"), help: ArgumentHelp("Shared-memory file to create (one left by a killed ivserver is replaced); <path>.lock keeps a second server off these paths.", valueName: "path"))
    var sharedMemoryPath = ServerConfiguration.defaultSharedMemoryPath

    @Option(name: .customLong("qemu-sock"), help: ArgumentHelp("UNIX socket QEMU's ivshmem-doorbell connects to.", valueName: "path"))
    var qemuSocketPath = ServerConfiguration.defaultQemuSocketPath

    @Option(name: .customLong("client-sock"), help: ArgumentHelp("UNIX socket host clients connect to.", valueName: "path"))
    var clientSocketPath = ServerConfiguration.defaultClientSocketPath

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, warning or error.", valueName: "level"))
    var logLevel: LogLevelArgument = .info

    @Option(name: .customLong("socket-mode"), help: ArgumentHelp("Mode of both socket files, in octal.", valueName: "mode"))
    var socketMode = FileMode(ServerConfiguration.defaultSocketMode)

    @Option(name: .customLong("socket-group"), help: ArgumentHelp(
        "Group of both socket files (name or number); default: the server's group.", valueName: "group"))
    var socketGroup: GroupArgument?

    @Option(name: .customLong("shm-mode"), help: ArgumentHelp("Mode of the shared-memory file, in octal.", valueName: "mode"))
    var sharedMemoryMode = FileMode(ServerConfiguration.defaultSharedMemoryMode)

    @Option(name: .customLong("allow-uid"), help: ArgumentHelp(
        "Also serve peers with this user id (repeatable). Root and the server's own user are always served.", valueName: "uid"))
    var allowedUIDs: [UInt32] = []

    @Option(name: .customLong("allow-gid"), help: ArgumentHelp(
        "Also serve peers in this group, primary or supplementary (repeatable; name or number).", valueName: "group"))
    var allowedGroups: [GroupArgument] = []

    @Option(name: .customLong("handshake-timeout"), help: ArgumentHelp(
        "Seconds a host client has to finish its handshake.", valueName: "seconds"))
    var handshakeTimeout: Double = Double(ServerConfiguration.defaultHandshakeTimeoutMilliseconds) / 1000

    @Option(name: .customLong("max-pending"), help: ArgumentHelp(
        "Host clients allowed mid-handshake at once; more are closed at once.", valueName: "count"))
    var maximumPending = ServerConfiguration.defaultMaximumPending

    func validate() throws {
        let paths = [("--shm-path", sharedMemoryPath), ("--qemu-sock", qemuSocketPath), ("--client-sock", clientSocketPath)]
        for (flag, path) in paths where path.isEmpty {
            throw ValidationError("\(flag) must not be empty")
        }
        if Set(paths.map(\.1)).count != paths.count {
            throw ValidationError("--shm-path, --qemu-sock and --client-sock must be three different paths")
        }
        if let layoutPath, layoutPath.isEmpty {
            throw ValidationError("--layout must not be empty")
        }
        guard handshakeTimeout > 0, handshakeTimeout <= 86400 else {
            throw ValidationError("--handshake-timeout must be more than 0 and at most 86400 seconds")
        }
        guard maximumPending >= 1 else { throw ValidationError("--max-pending must be at least 1") }
    }

    func run() throws {
        let level = logLevel.level
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ivserver")

        let layout: LayoutPlan
        let source: String
        do {
            if let layoutPath {
                layout = try LayoutLoader.load(path: layoutPath)
                source = layoutPath
            } else {
                layout = LayoutLoader.loadDefault()
                source = DefaultLayout.sourceName
                logger.info("no --layout given: using the \(source)")
            }
        } catch {
            writeToStandardError("ivserver: \(error)\n")
            throw ExitCode(2)
        }

        // Belt and braces: every send already uses MSG_NOSIGNAL.
        signal(SIGPIPE, SIG_IGN)
        var configuration = ServerConfiguration(
            layout: layout, layoutSource: source, sharedMemoryPath: sharedMemoryPath,
            qemuSocketPath: qemuSocketPath, clientSocketPath: clientSocketPath,
            accessPolicy: AccessPolicy(
                serverUID: getuid(), allowedUIDs: Set(allowedUIDs), allowedGIDs: Set(allowedGroups.map(\.gid))))
        configuration.socketMode = socketMode.value
        configuration.socketGroup = socketGroup?.gid
        configuration.sharedMemoryMode = sharedMemoryMode.value
        configuration.handshakeTimeoutMilliseconds = UInt64((handshakeTimeout * 1000).rounded(.up))
        configuration.maximumPending = maximumPending
        let server = Server(configuration: configuration) { event in
            logger.log(level: event.severity.logLevel, "\(event)")
        }
        do {
            try server.run()
        } catch {
            logger.error("\(error)")
            throw ExitCode(1)
        }
        logger.info("stopped")
    }
}

/// A file mode given in octal ("0660" or "660").
struct FileMode: ExpressibleByArgument {
    var value: UInt32

    init(_ value: UInt32) { self.value = value }

    init?(argument: String) {
        guard let value = UInt32(argument, radix: 8), value <= 0o777 else { return nil }
        self.value = value
    }

    var defaultValueDescription: String { "0" + String(value, radix: 8) }
}

/// A group by name or number, resolved while the arguments are parsed.
struct GroupArgument: ExpressibleByArgument {
    var gid: UInt32

    init?(argument: String) {
        if let number = UInt32(argument) {
            gid = number
        } else if let entry = getgrnam(argument) {
            gid = entry.pointee.gr_gid
        } else {
            return nil
        }
    }
}

enum LogLevelArgument: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, warning, error

    var level: Logger.Level {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        }
    }
}

extension ServerEvent.Severity {
    var logLevel: Logger.Level {
        switch self {
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        }
    }
}

/// Writes to fd 2 directly (the `stderr` FILE is a global Swift 6 rejects).
func writeToStandardError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
