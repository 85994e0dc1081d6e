import LinuxSystem
import MultiPeer
import ServerCore
import ArgumentParser
import IVServer

/// QEMU's ivshmem-server's flags, with its meanings and defaults, plus
/// ivserver's own fences. Shared by `ivserver multi-peer` and the binary
/// run as `ivshmem-server`.
struct MultiPeerOptions: ParsableArguments {
    @Option(name: [.customShort("S"), .customLong("socket")], help: ArgumentHelp(
        "UNIX socket the peers (QEMU's ivshmem-doorbell, ivctl peer) connect to.", valueName: "path"))
    var socketPath = PeerServerConfiguration.defaultSocketPath

    @Option(name: [.customShort("M"), .customLong("shm-name")], help: ArgumentHelp(
        "POSIX shared-memory object (/dev/shm/<name>); an existing one is served with its contents, as QEMU's server does.",
        valueName: "name"))
    var sharedMemoryName: String?

    @Option(name: [.customShort("m"), .customLong("shm-dir")], help: ArgumentHelp(
        "Create the memory as an unlinked file in this directory instead (a hugetlbfs mount such as /dev/hugepages: the size is rounded up to whole huge pages, all taken from the pool at start).",
        valueName: "dir"))
    var sharedMemoryDirectory: String?

    @Option(name: [.customShort("l"), .customLong("size")], help: ArgumentHelp(
        "Size of the shared memory: bytes, or with a K, M, G suffix.", valueName: "size"))
    var size = MemorySizeArgument(PeerServerConfiguration.defaultSize)

    @Option(name: [.customShort("n"), .customLong("vectors")], help: ArgumentHelp(
        "Interrupt vectors (eventfds) per peer, 1 to \(PeerServerConfiguration.maximumVectors); QEMU's device should have the same vectors=.",
        valueName: "count"))
    var vectors = PeerServerConfiguration.defaultVectors

    @Flag(name: [.customShort("F"), .customLong("foreground")], help: "Stay in the foreground (otherwise the server goes to the background once it serves).")
    var foreground = false

    @Option(name: [.customShort("p"), .customLong("pid-file")], help: ArgumentHelp(
        "Where the background server writes its pid (not written with -F).", valueName: "file"))
    var pidFile = PeerServerConfiguration.defaultPidFile

    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "Log each protocol step too (--log-level debug).")
    var verbose = false

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, warning or error.", valueName: "level"))
    var logLevel: LogLevelArgument?

    @Option(name: .customLong("max-peers"), help: ArgumentHelp(
        "Peers connected at once (1 to 65536); beyond it a newcomer is sent version -1 and closed.", valueName: "count"))
    var maximumPeers = PeerServerConfiguration.defaultMaximumPeers

    @Option(name: .customLong("max-queued-messages"), help: ArgumentHelp(
        "Messages waiting for a peer that does not read; beyond it that peer is dropped.", valueName: "count"))
    var maximumQueuedMessages = PeerServerConfiguration.defaultMaximumQueuedMessages

    @Flag(name: .customLong("prealloc"), help: "Take every page of the shared memory from its filesystem at start (as QEMU's prealloc=on), so that no peer can die of SIGBUS when the filesystem is full later; a filesystem without the room refuses the start (exit 1).")
    var preallocate = false

    @OptionGroup var access: AccessOptions

    var configuration: PeerServerConfiguration {
        // (AccessOptions.validate checked the values already.)
        let access = (try? access.values()) ?? AccessValues()
        var configuration = PeerServerConfiguration(accessPolicy: access.policy)
        configuration.socketPath = socketPath
        if let sharedMemoryDirectory {
            configuration.memory = .directory(sharedMemoryDirectory)
        } else {
            configuration.memory = .posixName(sharedMemoryName ?? PeerServerConfiguration.defaultSharedMemoryName)
        }
        configuration.size = size.bytes
        configuration.vectors = vectors
        configuration.maximumPeers = maximumPeers
        configuration.maximumQueuedMessages = maximumQueuedMessages
        configuration.preallocate = preallocate
        configuration.socketMode = access.socketMode
        configuration.socketGroup = access.socketGroup
        configuration.sharedMemoryMode = access.sharedMemoryMode
        return configuration
    }

    func validate() throws {
        if sharedMemoryName != nil && sharedMemoryDirectory != nil {
            throw ValidationError("give either -M (a POSIX shared-memory name) or -m (a directory), not both")
        }
        if let problem = configuration.problem { throw ValidationError(problem) }
        if !foreground && pidFile.isEmpty { throw ValidationError("the pid file (-p) is empty") }
    }

    /// Serves until a stop signal. Start-up errors exit 1, after a line on
    /// stderr (in the background: the waiting parent exits 1).
    func run() throws {
        let severity = (logLevel ?? (verbose ? .debug : .info)).severity
        ProcessLimits.ignoreBrokenPipes()
        let log = EventLog(minimumSeverity: severity, label: "ivshmem-server")
        let service = Service(server: PeerServer(configuration: configuration, events: log,
                                                    handed: ServiceManager.takeHandedDescriptors()), events: log)
        do {
            try service.run(background: foreground ? nil : (detach: true, pidFile: pidFile))
        } catch {
            log.log(.error, "\(error)")
            throw ExitCode(1)
        }
        log.log(.info, "stopped")
    }
}

private let multiPeerDiscussion = """
    QEMU's multi-peer ivshmem protocol (docs/specs/ivshmem-spec.rst), as a drop-in for QEMU's \
    contrib ivshmem-server: every peer (a QEMU with -device ivshmem-doorbell, or a host program) \
    gets an ID, the shared memory and one eventfd per vector, and is told of every other peer's \
    eventfds as they come and go. A peer rings another by writing (ID << 16) | vector to its \
    Doorbell register.

    IDs are 0 to 65535, handed out by a counter that skips IDs in use and wraps, so a freed ID is \
    not reused until the counter comes round (as QEMU's server does). A peer is announced to the \
    others once its own greeting is out; one that leaves before that is announced to nobody. \
    A QEMU whose command line shows a smaller vectors= is sent only that many of each peer's \
    eventfds (QEMU would reject the rest), with a warning.

    Without -F the server goes to the background once it serves, and the command exits 0; if \
    start-up fails it exits 1 with the reason on standard error. SIGINT, SIGTERM and SIGHUP stop \
    it, removing the socket, the shared-memory object (when it has a name) and the pid file; \
    SIGUSR1 logs its state.
    """

struct MultiPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "multi-peer",
        abstract: "Serve QEMU's multi-peer ivshmem protocol (a drop-in for QEMU's ivshmem-server).",
        discussion: multiPeerDiscussion + "\n\nThe same binary run as `ivshmem-server` takes the same options.")

    @OptionGroup var options: MultiPeerOptions

    func run() throws { try options.run() }
}

/// The binary run under the name `ivshmem-server` (the link `make` and the
/// .deb install): QEMU's server's command line.
struct IVShmemServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ivshmem-server",
        abstract: "Inter-VM shared-memory server for QEMU's ivshmem-doorbell (ivserver's multi-peer mode).",
        discussion: multiPeerDiscussion,
        version: IVServerVersion.string)

    @OptionGroup var options: MultiPeerOptions

    func run() throws { try options.run() }
}

/// A size with an optional K, M, G or T suffix.
struct MemorySizeArgument: ExpressibleByArgument {
    var bytes: UInt64

    init(_ bytes: UInt64) { self.bytes = bytes }

    init?(argument: String) {
        guard let bytes = MemorySize.parse(argument) else { return nil }
        self.bytes = bytes
    }

    var defaultValueDescription: String { MemorySize.describe(bytes) }
}
