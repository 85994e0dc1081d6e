import LinuxSystem

/// Whether a server's shared memory can get every page it may be asked
/// for: its filesystem's free room against what the memory can still take
/// as the guest and host clients first touch it. Checked at start (a
/// warning when short), told in STATUS= and the state (`ivctl status`).
public struct MemoryRoom {
    let memory: SharedMemoryFile
    /// The bytes anyone may touch (the regions, or the whole memory).
    let touchable: [Range<UInt64>]
    /// Where the memory is, for messages (nil: an unlinked file).
    let path: String?
    /// How to put the memory elsewhere, in this server's flags.
    let elsewhere: String
    /// What the start found short, kept for STATUS= (which must stay cheap).
    public private(set) var shortfallAtStart: MemoryShortfall?

    public init(memory: SharedMemoryFile, touchable: [Range<UInt64>], path: String?, elsewhere: String) {
        self.memory = memory
        self.touchable = touchable
        self.path = path
        self.elsewhere = elsewhere
    }

    /// The shortfall now (nil: room enough, or the filesystem does not say).
    func shortfall() throws(SystemError) -> MemoryShortfall? {
        try memory.shortfall(touchable: touchable, path: path)
    }

    /// At start: a warning when the filesystem is short of what the memory
    /// can still take.
    public mutating func checkAtStart(events: EventSink) {
        do {
            shortfallAtStart = try shortfall()
            if let shortfallAtStart {
                events.record(CoreEvent.memoryShort(memory: path ?? "(unlinked)", shortfall: shortfallAtStart, elsewhere: elsewhere))
            }
        } catch {
            events.record(CoreEvent.detail("could not tell how much room the shared memory's filesystem has: \(error)"))
        }
    }

    /// For STATUS=: "shared memory short of room: 4.0 MiB free on …, up to 400.1 MiB needed (see the log)".
    public var statusFragment: String? {
        shortfallAtStart.map { "shared memory short of room: \(Self.glance($0))" }
    }

    /// One line of the state, measured now.
    public func stateLine() -> String {
        do {
            if let short = try shortfall() {
                return "shared memory SHORT OF ROOM: \(Self.glance(short)); touching the rest can kill QEMU or a host client "
                    + "with SIGBUS (--prealloc, a larger filesystem, or \(elsewhere))"
            }
            return memory.isOnHugePages ? "shared memory on huge pages: every page was taken at start"
                : "shared memory has room: its filesystem can give every page it may still take"
        } catch {
            return "shared memory's room unknown: \(error)"
        }
    }

    static func glance(_ short: MemoryShortfall) -> String {
        "\(MemorySize.approximate(short.free)) free on \(short.filesystem), up to \(MemorySize.approximate(short.needed)) may be taken"
    }
}
