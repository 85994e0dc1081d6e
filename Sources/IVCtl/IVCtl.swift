import ArgumentParser
import IVClient
import LinuxSystem
import WireFormat

/// `ivctl`: look at and poke a running ivserver's regions from the shell.
/// Argument parsing and printing only; the work is IVClient's.
@main
struct IVCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ivctl",
        abstract: "Inspect and signal the regions of a running ivserver, as a host client; or join a multi-peer server as a peer (ivctl peer).",
        discussion: """
            Every command connects to ivserver's client socket (--client-sock) and
            makes the HALD handshake for a region, as a host HAL would. Offsets are
            relative to the region's begin, like the offsets in signal tables; they
            may be written in decimal or as 0x-prefixed hex.

            Exit codes:
              0   success
              1   the server could not be reached, refused, or an operation failed
              2   wait, peer wait: the timeout passed before --count interrupts
              3   no region of that name (the message lists the regions), or
                  ivctl peer: no peer of that ID (the message lists the peers)
              64  bad command line (also: --offset/--length outside the region)
            """,
        subcommands: [Regions.self, Dump.self, Write.self, Signal.self, Wait.self, Watch.self, Status.self, PeerCommand.self]
    )
}

/// The exit codes in the help text above.
enum Exit {
    static let failure = ExitCode(1)
    static let timedOut = ExitCode(2)
    static let unknownRegion = ExitCode(3)
    static let usage = ExitCode.validationFailure
}

struct ServerOptions: ParsableArguments {
    @Option(name: .customLong("client-sock"), help: ArgumentHelp("ivserver's client socket.", valueName: "path"))
    var clientSocket = RegionConnection.defaultSocketPath

    @Option(name: .customLong("handshake-timeout"), help: ArgumentHelp("Seconds to wait for the server's answer.", valueName: "seconds"))
    var handshakeTimeout = 5.0

    func validate() throws {
        guard handshakeTimeout > 0, handshakeTimeout.isFinite else {
            throw ValidationError("--handshake-timeout must be a positive number of seconds")
        }
    }

    var timeout: Duration { SystemTime.duration(seconds: handshakeTimeout) }

    func open(_ region: String) throws -> RegionConnection {
        try report { () throws(IVClientError) in
            try RegionConnection.open(region: region, socket: clientSocket, timeout: timeout)
        }
    }

    /// The live layout: asked for as such, or, with `region`, through a
    /// handshake for that region.
    func layout(region: String? = nil) throws -> LayoutHeader {
        try report { () throws(IVClientError) in
            if let region { return try RegionConnection.readLayout(socket: clientSocket, tryingRegions: [region], timeout: timeout) }
            return try RegionConnection.readLayout(socket: clientSocket, timeout: timeout)
        }
    }
}

/// Runs `body`; an IVClientError becomes one line on stderr and its exit code.
func report<Result>(_ body: () throws(IVClientError) -> Result) throws -> Result {
    do {
        return try body()
    } catch {
        Output.error("ivctl: \(error)")
        if case .unknownRegion = error.kind { throw Exit.unknownRegion }
        if case .invalidArgument = error.kind { throw Exit.usage }
        throw Exit.failure
    }
}

/// A byte offset or length: decimal or 0x-prefixed hex.
struct ByteValue: ExpressibleByArgument, CustomStringConvertible {
    var value: Int

    init(_ value: Int) { self.value = value }

    /// How --help shows a default: as it would be typed.
    var description: String { String(value) }

    init?(argument: String) {
        let parsed = argument.lowercased().hasPrefix("0x") ? Int(argument.dropFirst(2), radix: 16) : Int(argument)
        guard let parsed, parsed >= 0 else { return nil }
        value = parsed
    }

    /// For an option's `transform:` (with `parsing: .unconditional`, so
    /// that "-1" reaches it instead of reading as a flag): says what is
    /// wrong with a value it refuses.
    static func parse(_ text: String) throws -> ByteValue {
        guard let value = ByteValue(argument: text) else {
            throw ValidationError(text.hasPrefix("-") && Int(text) != nil
                ? "offsets and lengths are 0 or more"
                : "offsets and lengths are numbers of bytes, decimal or 0x-prefixed hex")
        }
        return value
    }
}

struct Regions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the live region table, read from the shared memory.",
        discussion: "Asks the server for its layout, whatever the regions are called; from a server without that request (an older ivserver, the original one), it reads the layout through the shared memory of a handshake with one of Cuttlefish's region names, or with --region.")

    @OptionGroup var server: ServerOptions

    @Option(help: ArgumentHelp("Read the layout through a handshake for this region (for a server without the layout request).", valueName: "name"))
    var region: String?

    @Flag(help: "Print one JSON object (version, socket, shared_memory_size, regions by name) instead of the table.")
    var json = false

    func run() throws {
        let layout = try server.layout(region: region)
        if json { return JSONOutput.print(JSONOutput.regions(layout, socket: server.clientSocket)) }
        var lines = ["layout at \(server.clientSocket): \(layout.regions.count) regions, version \(layout.majorVersion).\(layout.minorVersion), "
            + "shared memory \(layout.size) bytes (\(hex0x(layout.size)))"]
        lines += RegionTable.lines(layout)
        lines.append(RegionTable.offsetsNote)
        Output.lines(lines)
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hexdump a region's bytes (hexdump -C style; repeated lines become '*').",
        discussion: "Reads with pread, so dumping a large sparse region allocates no memory in the shared-memory file.")

    @OptionGroup var server: ServerOptions

    @Argument(help: "The region's name.")
    var region: String

    @Option(parsing: .unconditional, help: ArgumentHelp("First byte, relative to the region's begin (default: 0).", valueName: "n"), transform: ByteValue.parse)
    var offset = ByteValue(0)

    @Option(parsing: .unconditional, help: ArgumentHelp("How many bytes (default: to the region's end).", valueName: "n"), transform: ByteValue.parse)
    var length: ByteValue?

    func run() throws {
        let connection = try server.open(region)
        let size = Int(connection.descriptor.size)
        let start = offset.value
        let count = length?.value ?? max(size - start, 0)
        guard start <= size, count <= size - start else {
            Output.error("ivctl: bytes \(start)..<\(start + count) are outside region '\(region)' (\(size) bytes)")
            throw Exit.usage
        }
        var dump = HexDump(startOffset: start)
        let chunkSize = 1 << 20
        var position = 0
        while position < count {
            let wanted = min(chunkSize, count - position)
            let chunk = try report { () throws(IVClientError) in try connection.readFromFile(offset: start + position, count: wanted) }
            Output.text(dump.feed(chunk))
            position += wanted
        }
        Output.text(dump.finish())
    }
}

struct Signal: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Interrupt the guest on a region (its MSI-X vector), or signal a futex word through the host_to_guest table.",
        discussion: "The interrupt follows the vSoC rule: it raises the host_to_guest table's interrupt_signalled word and rings only when the word was 0. While the guest has not taken the last interrupt, a new one merges into it (and ivctl says so).")

    @OptionGroup var server: ServerOptions

    @Argument(help: "The region's name.")
    var region: String

    @Option(parsing: .unconditional, help: ArgumentHelp("Queue this futex word's offset in the host_to_guest signal table first.", valueName: "n"), transform: ByteValue.parse)
    var offset: ByteValue?

    @Flag(help: "With --offset: ask the guest to signal the word back.")
    var roundTrip = false

    func validate() throws {
        if roundTrip && offset == nil { throw ValidationError("--round-trip needs --offset") }
    }

    func run() throws {
        let connection = try server.open(region)
        let rang = try report { () throws(IVClientError) -> Bool in
            if let offset {
                guard let word = UInt32(exactly: offset.value) else {
                    throw connection.error(.invalidArgument("offset \(offset.value) is outside the region"))
                }
                try connection.sendSignal(offset: word, roundTrip: roundTrip)
                return true
            }
            return try connection.interruptGuest()
        }
        let what = offset.map { "signalled offset \($0.value)\(roundTrip ? " (round trip)" : "") to" } ?? "interrupted"
        if rang {
            Output.lines(["\(what) the guest on region \(region) (vector \(connection.regionIndex))"])
        } else {
            Output.lines(["the guest has not taken its last interrupt on region \(region) (vector \(connection.regionIndex)) yet: this one merged into it"])
        }
    }
}

struct Wait: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait for the guest to interrupt a region; print each wake-up with its count.",
        discussion: "An interrupt is the guest_to_host table's interrupt_signalled word being set, or a ring of the region's eventfd (a guest that only writes the Doorbell). Waiting takes it: it clears the word, so the guest can ring again, and reads the eventfd. So this consumes the interrupts: a HAL waiting on the same region at the same time may miss them (watch does not consume).")

    @OptionGroup var server: ServerOptions

    @Argument(help: "The region's name.")
    var region: String

    @Option(help: ArgumentHelp("Give up after this many seconds (exit code 2).", valueName: "seconds"))
    var timeout: Double?

    @Option(help: ArgumentHelp("Stop once this many interrupts were counted.", valueName: "n"))
    var count = 1

    func validate() throws {
        if let timeout, !(timeout >= 0 && timeout.isFinite) { throw ValidationError("--timeout must be a number of seconds >= 0") }
        if count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func run() throws {
        let connection = try server.open(region)
        try countInterrupts(count, timeout: timeout, label: "\(region)", failureSubject: "region '\(region)'") { left in
            try report { () throws(IVClientError) in try connection.waitForGuest(timeout: left) }
        }
    }
}

/// `wait` and `peer wait`: waits until `count` interrupts were counted,
/// printing "LABEL: N interrupt(s)" per wake-up; exit code 2 when `timeout`
/// (seconds) passes first. `wait` gets the time left and returns a
/// wake-up's count, or nil when the time ran out.
func countInterrupts(_ count: Int, timeout: Double?, label: String, failureSubject: String,
                     wait: (Duration?) throws -> UInt64?) throws {
    let deadline = timeout.map { ContinuousClock.now + SystemTime.duration(seconds: $0) }
    var seen: UInt64 = 0
    while seen < UInt64(count) {
        guard let woke = try wait(deadline.map { $0 - ContinuousClock.now }) else {
            Output.error("ivctl: \(failureSubject): timed out after \(seen) of \(count) interrupts")
            throw Exit.timedOut
        }
        seen += woke
        Output.lines(["\(label): \(woke) interrupt\(woke == 1 ? "" : "s")"])
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print what the server holds: the layout and memory, the VM, each region's clients, refusals, pending handshakes.",
        discussion: "Asked on the client socket with a request no region can match, so the server's access rules apply as to any client.")

    @OptionGroup var server: ServerOptions

    @Flag(help: "Print one JSON object (version, socket, vm: null or its identity, shared_memory_size, regions by name, state: the lines above) instead of the text.")
    var json = false

    func run() throws {
        let text = try report { () throws(IVClientError) in
            try RegionConnection.serverStatus(socket: server.clientSocket, timeout: server.timeout)
        }
        guard json else { return Output.text(text) }
        let (vm, layout) = try report { () throws(IVClientError) in
            (try RegionConnection.attachedVM(socket: server.clientSocket, timeout: server.timeout),
             try RegionConnection.readLayout(socket: server.clientSocket, timeout: server.timeout))
        }
        JSONOutput.print(JSONOutput.status(socket: server.clientSocket, vm: vm, layout: layout, state: text))
    }
}

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a line whenever the guest interrupts any region, until Ctrl-C.",
        discussion: "Watching does not consume the interrupts: the regions' own clients still get them. It sees the guest_to_host eventfd's rings; a guest that uses the signal tables rings only when it raises the table's interrupt_signalled word from 0, so until a client takes the interrupt (clears the word) its later interrupts merge into the first and show no line. Rings of one region that come faster than they are printed show as one line.")

    @OptionGroup var server: ServerOptions

    func run() throws {
        let layout = try server.layout()
        let connections = try layout.regions.map { try server.open($0.name) }
        let names = connections.map(\.regionName)
        let watcher = try report { () throws(IVClientError) in try InterruptWatcher(connections: connections) }
        Output.lines(["watching \(names.count) regions at \(server.clientSocket): \(names.joined(separator: ", "))"])
        while true {
            let rung = try report { () throws(IVClientError) in try watcher.next(timeout: nil) }
            Output.lines(rung.map { "\(names[$0]): interrupted" })
        }
    }
}
