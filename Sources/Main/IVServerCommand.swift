import LinuxSystem
import ServerCore
import ArgumentParser
import Glibc
import IVServer

/// The entry point: a plain `serve` command line starts at once (see
/// QuickServe); everything else is ArgumentParser's.
@main
enum Entry {
    static func main() {
        // Run as `ivshmem-server` (a link to this binary): QEMU's server's command line.
        if let name = CommandLine.arguments.first?.split(separator: "/").last, name == "ivshmem-server" {
            IVShmemServerCommand.main()
            return
        }
        guard let settings = QuickServe.settings(Array(CommandLine.arguments.dropFirst())) else {
            IVServerCommand.main()
            return
        }
        do {
            try Serve.serve(settings)
        } catch {
            IVServerCommand.exit(withError: error)
        }
    }
}

struct IVServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ivserver",
        abstract: "Host-side shared-memory server for a vSoC (Cuttlefish-style) VM.",
        discussion: """
            With no subcommand, `ivserver [options]` is `ivserver serve [options]`: create the \
            shared memory described by a layout and one eventfd pair per region, and serve \
            QEMU's ivshmem-doorbell device on the QEMU socket and host clients on the client \
            socket until SIGINT, SIGTERM or SIGHUP.

            Under systemd (NOTIFY_SOCKET), the shared memory, the eventfds, both listening \
            sockets and the attached VM's connection are kept in the unit's fd store \
            (FileDescriptorStoreMax=); a restarted server gets them back (LISTEN_FDS) and \
            goes on with them, so the VM and its host clients are not separated. SIGUSR2 does \
            the same without systemd: the server executes its binary again in place (same pid), \
            handing over those fds; if that fails it serves on as before.

            Exit status: 0 after a clean stop, 1 on a runtime failure (another server on these \
            paths, a path in use or that cannot be created), 2 for a layout or VM configuration \
            that cannot be read or is invalid, or for fds handed back by the service manager \
            that do not fit the layout (a running VM is never split from its memory), 64 for \
            bad arguments; `launch` exits with the \
            VM's status (128+signal if it was killed, 127/126 if it could not be started).
            """,
        version: IVServerVersion.string,
        subcommands: [Serve.self, Launch.self, QemuArgs.self, LayoutCommand.self, MultiPeer.self],
        defaultSubcommand: Serve.self
    )
}

/// Where the layout comes from (shared by every subcommand).
struct LayoutOptions: ParsableArguments {
    @Option(name: ServeFlag.layout.argumentName, help: ServeFlag.layout.argumentHelp)
    var layoutPath: String?

    #if IVSERVER_PACKAGED
    /// The packaged binary's default layout: the conffile, when present.
    static let installedLayoutPath: String? = "/etc/ivserver/vsoc_mem.json"
    #else
    static let installedLayoutPath: String? = nil
    #endif

    /// The layout file used without --layout, if any (else the built-in copy).
    static var defaultLayoutPath: String? {
        installedLayoutPath.flatMap { access($0, R_OK) == 0 ? $0 : nil }
    }

    /// The plan and where it came from; a layout error ends the process with status 2.
    func load() throws -> (plan: LayoutPlan, source: String) {
        try Self.load(path: layoutPath)
    }

    static func load(path layoutPath: String?) throws -> (plan: LayoutPlan, source: String) {
        do {
            if let path = layoutPath ?? defaultLayoutPath { return (try LayoutLoader.load(path: path), path) }
            return (LayoutLoader.loadDefault(), DefaultLayout.sourceName)
        } catch {
            StandardStream.error.write("ivserver: \(error)\n")
            throw ExitCode(2)
        }
    }
}

/// Who may reach the server, in both modes: the socket files' mode and
/// group, the memory's mode, and who besides root and the server's user
/// is served. Names, help and parsing are ServeFlag's.
struct AccessOptions: ParsableArguments {
    @Option(name: ServeFlag.socketMode.argumentName, help: ServeFlag.socketMode.argumentHelp)
    var socketMode: String?

    @Option(name: ServeFlag.socketGroup.argumentName, help: ServeFlag.socketGroup.argumentHelp)
    var socketGroup: String?

    @Option(name: ServeFlag.sharedMemoryMode.argumentName, help: ServeFlag.sharedMemoryMode.argumentHelp)
    var sharedMemoryMode: String?

    @Option(name: ServeFlag.allowUID.argumentName, help: ServeFlag.allowUID.argumentHelp)
    var allowedUIDs: [String] = []

    @Option(name: ServeFlag.allowGID.argumentName, help: ServeFlag.allowGID.argumentHelp)
    var allowedGroups: [String] = []

    func apply(to settings: inout ServeSettings) throws {
        try ServeFlag.socketMode.apply(socketMode.list, to: &settings)
        try ServeFlag.socketGroup.apply(socketGroup.list, to: &settings)
        try ServeFlag.sharedMemoryMode.apply(sharedMemoryMode.list, to: &settings)
        try ServeFlag.allowUID.apply(allowedUIDs, to: &settings)
        try ServeFlag.allowGID.apply(allowedGroups, to: &settings)
    }

    func values() throws -> AccessValues {
        var settings = ServeSettings()
        try apply(to: &settings)
        return settings.access
    }

    func validate() throws {
        _ = try values()
    }
}

/// Everything `serve` and `launch` share. Names, help and parsing are
/// ServeFlag's; these declarations give ArgumentParser its help and errors.
struct ServerOptions: ParsableArguments {
    @OptionGroup var layout: LayoutOptions

    @Option(name: ServeFlag.sharedMemoryPath.argumentName, help: ServeFlag.sharedMemoryPath.argumentHelp)
    var sharedMemoryPath: String?

    @Option(name: ServeFlag.qemuSocketPath.argumentName, help: ServeFlag.qemuSocketPath.argumentHelp)
    var qemuSocketPath: String?

    @Option(name: ServeFlag.clientSocketPath.argumentName, help: ServeFlag.clientSocketPath.argumentHelp)
    var clientSocketPath: String?

    @Option(name: ServeFlag.logLevel.argumentName, help: ServeFlag.logLevel.argumentHelp)
    var logLevel: String?

    @OptionGroup var access: AccessOptions

    @Option(name: ServeFlag.handshakeTimeout.argumentName, help: ServeFlag.handshakeTimeout.argumentHelp)
    var handshakeTimeout: String?

    @Option(name: ServeFlag.maximumPending.argumentName, help: ServeFlag.maximumPending.argumentHelp)
    var maximumPending: String?

    @Option(name: ServeFlag.maximumPendingPerProcess.argumentName, help: ServeFlag.maximumPendingPerProcess.argumentHelp)
    var maximumPendingPerProcess: String?

    @Option(name: ServeFlag.maximumPendingPerUser.argumentName, help: ServeFlag.maximumPendingPerUser.argumentHelp)
    var maximumPendingPerUser: String?

    @Flag(name: ServeFlag.replaceHeldMemory.argumentName, help: ServeFlag.replaceHeldMemory.argumentHelp)
    var replaceHeldMemory = false

    @Flag(name: ServeFlag.preallocate.argumentName, help: ServeFlag.preallocate.argumentHelp)
    var preallocate = false

    /// The values given, through ServeFlag's table: what QuickServe makes
    /// of the same command line.
    func settings() throws -> ServeSettings {
        var settings = ServeSettings()
        try ServeFlag.layout.apply(layout.layoutPath.list, to: &settings)
        try ServeFlag.sharedMemoryPath.apply(sharedMemoryPath.list, to: &settings)
        try ServeFlag.qemuSocketPath.apply(qemuSocketPath.list, to: &settings)
        try ServeFlag.clientSocketPath.apply(clientSocketPath.list, to: &settings)
        try ServeFlag.logLevel.apply(logLevel.list, to: &settings)
        try access.apply(to: &settings)
        try ServeFlag.handshakeTimeout.apply(handshakeTimeout.list, to: &settings)
        try ServeFlag.maximumPending.apply(maximumPending.list, to: &settings)
        try ServeFlag.maximumPendingPerProcess.apply(maximumPendingPerProcess.list, to: &settings)
        try ServeFlag.maximumPendingPerUser.apply(maximumPendingPerUser.list, to: &settings)
        try ServeFlag.replaceHeldMemory.apply(replaceHeldMemory ? [""] : [], to: &settings)
        try ServeFlag.preallocate.apply(preallocate ? [""] : [], to: &settings)
        return settings
    }

    func validate() throws {
        if let problem = try settings().problem { throw ValidationError(problem) }
    }
}

extension Optional where Wrapped == String {
    /// The one value given, or none.
    var list: [String] { map { [$0] } ?? [] }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the shared memory until a stop signal (the default).")

    @OptionGroup var options: ServerOptions

    func run() throws {
        try Self.serve(options.settings())
    }

    static func serve(_ settings: ServeSettings) throws {
        let (configuration, log) = try settings.start()
        let service = VSoCService(configuration: configuration, events: log, handover: .fromEnvironment())
        do {
            try service.run()
        } catch let error as HandoverError {
            log.log(.error, "\(error)")
            throw ExitCode(2)
        } catch {
            log.log(.error, "\(error)")
            throw ExitCode(1)
        }
        log.log(.info, "stopped")
    }
}

struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve, start the VM once both sockets listen, and stop when it exits.",
        discussion: """
            The VM's command comes after `--` or from --vm-config; ivserver appends \
            `-chardev socket,path=<qemu-sock>,id=ivsh -device ivshmem-doorbell,chardev=ivsh,vectors=<regions>` \
            and starts it without a shell, with only its standard streams. SIGINT, SIGTERM and SIGHUP \
            are passed on to the VM; if it has not exited after --vm-stop-timeout it is killed. \
            ivserver then cleans up and exits with the VM's status.
            """)

    @OptionGroup var options: ServerOptions

    @Option(name: .customLong("vm-config"), help: ArgumentHelp(
        "JSON file with the VM's binary, arguments and environment (see docs/running.md).", valueName: "file"))
    var vmConfigPath: String?

    @Option(name: .customLong("vm-stop-timeout"), help: ArgumentHelp(
        "Seconds the VM gets to exit after a stop signal before it is killed.", valueName: "seconds"))
    var stopTimeout: Double = 10

    @Argument(parsing: .postTerminator, help: ArgumentHelp("The VM's command and its arguments, after --.", valueName: "command"))
    var command: [String] = []

    func validate() throws {
        if command.isEmpty && vmConfigPath == nil {
            throw ValidationError("give the VM's command after -- (e.g. -- qemu-system-x86_64 -m 2G), or --vm-config")
        }
        if !command.isEmpty && vmConfigPath != nil {
            throw ValidationError("give the VM's command either after -- or in --vm-config, not both")
        }
        guard stopTimeout > 0, stopTimeout <= 86400 else {
            throw ValidationError("--vm-stop-timeout must be more than 0 and at most 86400 seconds")
        }
    }

    func run() throws {
        var launch = LaunchSpec(arguments: command, stopTimeoutMilliseconds: UInt64(SystemTime.milliseconds(seconds: stopTimeout)))
        if let vmConfigPath {
            do {
                let config = try VMConfig.load(path: vmConfigPath)
                launch.arguments = [config.binary] + config.arguments
                launch.environment = config.environment.isEmpty ? nil : config.environment(overriding: ProcessEnvironment.current)
            } catch {
                StandardStream.error.write("ivserver: \(error)\n")
                throw ExitCode(2)
            }
        }
        let (configuration, log) = try options.settings().start()
        let service = VSoCService(configuration: configuration, events: log, handover: .fromEnvironment())
        let termination: Termination?
        do {
            termination = try service.run(launching: launch)
        } catch let error as LaunchError {
            log.log(.error, "\(error)")
            throw ExitCode(error.shellStatus)
        } catch let error as HandoverError {
            log.log(.error, "\(error)")
            throw ExitCode(2)
        } catch {
            log.log(.error, "\(error)")
            throw ExitCode(1)
        }
        log.log(.info, "stopped")
        throw ExitCode(termination?.shellStatus ?? 0)
    }
}

struct QemuArgs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qemu-args",
        abstract: "Print the QEMU options that attach a VM to these sockets and this layout.",
        discussion: """
            One per line, or shell-quoted on one line with --shell, for launchers that start QEMU themselves; \
            with --libvirt, the <shmem> element of a libvirt domain instead (with the packaged units, \
            `systemctl enable --now ivserver@NAME.socket` is the only other step: the server starts when the \
            domain's QEMU connects). Every server option is accepted \
            (those other than --layout and --qemu-sock are checked and ignored), so a launcher can pass the \
            argument list it gives `serve`.
            """)

    @OptionGroup var options: ServerOptions

    @Flag(name: .customLong("shell"), help: "Print one shell-quoted line.")
    var shell = false

    @Flag(name: .customLong("libvirt"), help: "Print the <shmem> device of a libvirt domain (docs/libvirt.md).")
    var libvirt = false

    func validate() throws {
        if shell && libvirt { throw ValidationError("give --shell or --libvirt, not both") }
    }

    func run() throws {
        let (plan, source) = try options.layout.load()
        let configuration = VSoCServerConfiguration(
            layout: plan, layoutSource: source, qemuSocketPath: try options.settings().qemuSocketPath,
            accessPolicy: AccessPolicy(serverUID: Users.currentUID))
        let arguments = configuration.qemuArguments
        if libvirt {
            print(configuration.libvirtDevice)
        } else {
            print(shell ? arguments.map(ShellQuoting.quote).joined(separator: " ") : arguments.joined(separator: "\n"))
        }
    }
}

struct LayoutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layout",
        abstract: "Check a layout without creating anything and print its computed table.",
        discussion: """
            Exit status 0 when valid, 2 with every problem listed when not. Every server option is \
            accepted (those other than --layout are checked and ignored), so the argument list given \
            to `serve` can be passed as it is.
            """)

    @OptionGroup var options: ServerOptions

    @Flag(name: .customLong("json"), help: "Print the table as JSON.")
    var json = false

    func run() throws {
        let (plan, source) = try options.layout.load()
        print(json ? LayoutReport.json(plan) : LayoutReport.table(plan, source: source), terminator: "")
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
        } else if let gid = Users.groupID(named: argument) {
            self.gid = gid
        } else {
            return nil
        }
    }

    /// Why `argument` names no group.
    @Sendable static func problem(_ argument: String) -> String {
        "there is no group named '\(argument)' on this host (give a group's name, as getent group lists them, or its number)"
    }
}

enum LogLevelArgument: String, ExpressibleByArgument, CaseIterable {
    case trace, debug, info, warning, error

    /// The least severe line logged at this level.
    var severity: Severity {
        switch self {
        case .trace: return .trace
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        }
    }
}


