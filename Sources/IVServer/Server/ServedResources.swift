import ServerCore
import WireFormat
import LinuxSystem

/// What connections need from the server: the fds they hand out and where
/// to report.
final class ServedResources {
    let plan: LayoutPlan
    let sharedMemory: SharedMemoryFile
    let channels: [RegionChannels]
    let regionNames: ClientHandshake.RegionNames
    let events: EventSink
    /// The HALD handshake's messages, built once: the greeting, and per
    /// region the grant with its three fds.
    let greeting: OutgoingMessages
    let grants: [OutgoingMessages]
    /// vectors= of the connected QEMU, kept while its process runs.
    let doorbellVectors: DoorbellVectorLookup

    init(plan: LayoutPlan, sharedMemory: SharedMemoryFile, channels: [RegionChannels], qemuSocketPath: String,
         events: EventSink) {
        self.plan = plan
        self.sharedMemory = sharedMemory
        self.channels = channels
        self.events = events
        debug = events.isEnabled(.debug)
        trace = events.isEnabled(.trace)
        served = Array(repeating: 0, count: plan.regionCount)
        doorbellVectors = DoorbellVectorLookup(socketPath: qemuSocketPath)
        var names: [String: Int] = [:]
        for region in plan.regions { names[region.name] = region.index }
        regionNames = ClientHandshake.RegionNames(indexByName: names)
        greeting = OutgoingMessages([.init(bytes: ClientHandshake.greeting, fds: [])])
        grants = channels.map { channels in
            OutgoingMessages([.init(bytes: ClientHandshake.grantPayload,
                                    fds: [channels.guestToHost.rawValue, channels.hostToGuest.rawValue, sharedMemory.fd.rawValue])])
        }
    }

    func report(_ event: VSoCEvent) { events.record(event) }
    func report(_ event: CoreEvent) { events.record(event) }

    /// Read once: whether debug and trace events are wanted (when not, they
    /// are not built at all).
    let debug: Bool
    let trace: Bool

    // What was served, for the status and the state dump.
    /// Host clients granted each region.
    var served: [Int]
    /// Host clients refused after they connected (bad request, timeout, …).
    var refused = 0

    /// The QEMU handshake as outgoing messages, built once per vector count.
    private var qemuHandshakes: [Int: OutgoingMessages] = [:]

    func qemuHandshake(vectorCount: Int?) -> OutgoingMessages {
        let key = min(vectorCount ?? plan.regionCount, plan.regionCount)
        if let cached = qemuHandshakes[key] { return cached }
        let messages = OutgoingMessages(QemuHandshake.messages(regionCount: plan.regionCount, vectorCount: key).map { message in
            .init(bytes: message.payload, fds: message.attachment.map { [rawFD(for: $0)] } ?? [])
        })
        qemuHandshakes[key] = messages
        return messages
    }

    // MARK: a new VM's signalling state

    private lazy var signallingWords = SignallingReset.words(of: plan)
    /// Every word the reset clears, as one list of offsets, and every
    /// eventfd it drains (two per region): the reset runs on QEMU's path,
    /// before its handshake, so its usual case (nothing left) reads each
    /// word without writing it, polls once and allocates nothing.
    private lazy var resetOffsets: [Int] = signallingWords.flatMap {
        [$0.guestToHostSignalled, $0.hostToGuestSignalled] + $0.tableSlots
    }
    private lazy var resetEventFDs = EventFDSet(channels.flatMap { [$0.guestToHost.rawValue, $0.hostToGuest.rawValue] })
    /// The memory up to the last region's end, mapped at the first new VM
    /// (only its signalling words are ever touched).
    private var signallingMapping: MappedMemory?
    /// What the last new VM's reset found, for the state dump.
    private(set) var lastReset: [SignallingReset.Found]?

    /// Gives every region the signalling state of a freshly started server
    /// (SignallingReset): the words cleared, the eventfds drained. Returns
    /// the regions where something was left (none: a clean start).
    func resetSignalling() throws(SystemError) -> [SignallingReset.Found] {
        let mapping: MappedMemory
        if let existing = signallingMapping {
            mapping = existing
        } else {
            mapping = try MappedMemory(sharedMemory.fd, offset: 0, count: Int(plan.allocatedSize))
            signallingMapping = mapping
        }
        var wereSet: Set<Int> = []
        // A plain load first: a word already 0 is not written (an atomic
        // exchange of every word would lock and dirty each cache line).
        for offset in resetOffsets where mapping.load(offset: offset) != 0 && mapping.exchange(0, offset: offset) != 0 {
            wereSet.insert(offset)
        }
        let drained = try resetEventFDs.drain()
        var found: [SignallingReset.Found] = []
        if !wereSet.isEmpty || drained != nil {
            let rings = drained ?? [UInt64](repeating: 0, count: resetEventFDs.count)
            for (position, words) in signallingWords.enumerated() {
                var region = SignallingReset.Found(index: words.index, name: words.name)
                region.guestToHostSignalled = wereSet.contains(words.guestToHostSignalled)
                region.hostToGuestSignalled = wereSet.contains(words.hostToGuestSignalled)
                region.queuedEntries = words.tableSlots.count { wereSet.contains($0) }
                region.guestToHostRings = rings[2 * position]
                region.hostToGuestRings = rings[2 * position + 1]
                if !region.isClean { found.append(region) }
            }
        }
        lastReset = found
        return found
    }

    func rawFD(for attachment: QemuHandshake.Attachment) -> Int32 {
        switch attachment {
        case .sharedMemory: return sharedMemory.fd.rawValue
        case let .guestToHost(region): return channels[region].guestToHost.rawValue
        case let .hostToGuest(region): return channels[region].hostToGuest.rawValue
        }
    }
}
