import LinuxSystem
import ServerCore

/// The hand-over: how one server process of a VM passes what the VM holds
/// (the shared memory, every region's eventfds, its connection) and both
/// listening sockets to the next one, so that a restart or an upgrade
/// changes nothing the VM or a host client sees. Both directions are
/// here: the names fds travel under, what a server hands over
/// (`outgoing`), what it takes back and checks (`receive`), and which
/// store entries change (`storeChanges`).
///
/// Two channels carry it, and both arrive as fds by name (`Source`):
/// - a service manager's fd store (`DescriptorStore`): written while
///   serving, handed back at the next start as LISTEN_FDS/LISTEN_FDNAMES;
/// - SIGUSR2's re-exec (LinuxSystem's `Reexec`, its `IVSERVER_HANDOVER_*`
///   variables), which hands everything at once to the new image.
///
/// A systemd socket unit's listeners come through LISTEN_FDS too, under
/// names of the unit's: they are no hand-over (alone they are a first
/// start) and are told apart by the prefix of ours (`ActivatedListeners`).
public enum Handover {
    // MARK: names

    /// Every name of the server's own begins so.
    static let prefix = "ivs-"
    static let sharedMemory = "ivs-shm"
    static let qemuListener = "ivs-qemu-listen"
    static let clientListener = "ivs-client-listen"
    static let vm = "ivs-vm"
    static func guestToHost(_ region: Int) -> String { "ivs-g2h-\(region)" }
    static func hostToGuest(_ region: Int) -> String { "ivs-h2g-\(region)" }

    /// A listener's name carries the identity of its socket file
    /// ("ivs-qemu-listen@DEVICE.INODE"), so that the next server process
    /// can tell from the file alone whether the path still leads to it.
    static func listenerName(_ base: String, file: FileIdentity) -> String {
        "\(base)@\(file.device).\(file.inode)"
    }

    /// The base name and file identity of a listener's name; nil for a
    /// name of another kind. A bare base name (stored by an earlier
    /// version) has no identity.
    static func parseListener(_ name: String) -> (base: String, file: FileIdentity?)? {
        let parts = name.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let base = String(parts[0])
        guard base == qemuListener || base == clientListener else { return nil }
        guard parts.count == 2 else { return (base, nil) }
        let numbers = parts[1].split(separator: ".", omittingEmptySubsequences: false)
        guard numbers.count == 2, let device = UInt64(numbers[0]), let inode = UInt64(numbers[1]) else { return (base, nil) }
        return (base, FileIdentity(device: device, inode: inode))
    }

    // MARK: where it comes from, where it goes

    /// What a server is given at start instead of reading the environment:
    /// the fds handed to this process (by name), the store to put what
    /// must outlive it in (nil: nothing outlives it), and the VM process
    /// that the image before a re-exec had started (`ivserver launch`).
    public struct Source {
        public var handed: [String: [OwnedFD]]
        public var store: (any DescriptorStore)?
        public var vmProcess: Int32?

        public init(handed: [String: [OwnedFD]], store: (any DescriptorStore)?, vmProcess: Int32? = nil) {
            self.handed = handed
            self.store = store
            self.vmProcess = vmProcess
        }

        /// A first start with nothing to keep: every file is made anew and
        /// removed at the end.
        public static var none: Source { Source(handed: [:], store: nil) }

        /// What this process was handed: LISTEN_FDS (a service manager's
        /// store, a socket unit's listeners) and a re-exec's variables, each
        /// removed once read; and the service manager's store when one
        /// listens (NOTIFY_SOCKET). Read once, by whoever starts the server.
        public static func fromEnvironment() -> Source {
            var handed = ServiceManager.takeHandedDescriptors()
            let reexec = Reexec.takeHanded()
            handed.merge(reexec.fds) { $0 + $1 }
            return Source(handed: handed, store: ServiceManager.isPresent ? ServiceManagerStore() : nil, vmProcess: reexec.child)
        }
    }

    // MARK: taking it back

    /// A listening socket a previous server process of this VM handed over:
    /// the name it came under, and the socket file it was bound to, when the
    /// name says.
    struct HandedListener {
        let fd: OwnedFD
        let name: String
        let file: FileIdentity?

        /// Whether the socket file at `path` is still the one this listens on,
        /// decided from the file alone: nothing ever connects to it, since that
        /// would reach the very listener being taken over. A name without the
        /// file's identity (an earlier version's) is taken at its word when a
        /// socket is at the path.
        func isStill(at path: String) throws(SystemError) -> Bool {
            guard let current = try FileIdentity.at(path) else { return false }
            if let file { return file == current }
            return try ExistingPath.isSocket(path)
        }
    }

    /// What a previous server process of this VM handed over: the memory
    /// and eventfds the VM holds, the listening sockets, and the VM's
    /// connection while one was attached.
    struct Received {
        let sharedMemory: SharedMemoryFile
        let channels: [RegionChannels]
        let qemuListener: HandedListener?
        let clientListener: HandedListener?
        let vm: OwnedFD?

        var listenerCount: Int { [qemuListener, clientListener].count { $0 != nil } }
    }

    /// The hand-over in `handed` (fds by name, a socket unit's taken out
    /// already), checked against the layout; nil when none came (a first
    /// start). Throws, one case per reason, when serving it would split the
    /// VM from its host clients.
    static func receive(from handed: [String: [OwnedFD]], plan: LayoutPlan, sharedMemoryPath: String) throws(HandoverError) -> Received? {
        guard !handed.isEmpty else { return nil }
        func single(_ name: String) throws(HandoverError) -> OwnedFD? {
            guard let fds = handed[name] else { return nil }
            guard fds.count == 1 else { throw .duplicate(name: name, count: fds.count) }
            return fds[0]
        }
        guard let memory = try single(sharedMemory) else { throw .noSharedMemory(handed: handed.keys.sorted()) }
        let taken = try SharedMemoryFile.takeOver(memory, path: sharedMemoryPath, size: UInt64(plan.size),
                                                  header: LayoutEncoder.encode(plan))
        var channels: [RegionChannels] = []
        for region in 0..<plan.regionCount {
            guard let toHost = try single(guestToHost(region)), let toGuest = try single(hostToGuest(region)) else {
                throw .missingEventFDs(region: region, regionCount: plan.regionCount)
            }
            for (name, fd) in [(guestToHost(region), toHost), (hostToGuest(region), toGuest)] where !EventFD.isEventFD(fd) {
                throw .notAnEventFD(name: name)
            }
            channels.append(RegionChannels(takingOver: toHost, toGuest))
        }
        if handed[guestToHost(plan.regionCount)] != nil || handed[hostToGuest(plan.regionCount)] != nil {
            throw .moreRegions(regionCount: plan.regionCount)
        }
        func listener(_ base: String) throws(HandoverError) -> HandedListener? {
            let names = handed.keys.filter { parseListener($0)?.base == base }.sorted()
            guard let name = names.first else { return nil }
            guard names.count == 1, let fd = try single(name) else { throw .duplicateListener(base: base, names: names) }
            return HandedListener(fd: fd, name: name, file: parseListener(name)?.file)
        }
        return Received(sharedMemory: taken, channels: channels, qemuListener: try listener(qemuListener),
                        clientListener: try listener(clientListener), vm: try single(vm))
    }

    // MARK: handing it over

    /// What outlives a server process, by name: the memory, both eventfds
    /// of each region, the listeners (under `listeners`' names) and, when
    /// given, the VM's connection.
    static func outgoing(sharedMemory: Int32, channels: [RegionChannels], listeners: [(name: String, fd: Int32)],
                         vm: Int32?) -> [(name: String, fd: Int32)] {
        var list: [(name: String, fd: Int32)] = [(Handover.sharedMemory, sharedMemory)]
        for (region, channel) in channels.enumerated() {
            list.append((guestToHost(region), channel.guestToHost.rawValue))
            list.append((hostToGuest(region), channel.hostToGuest.rawValue))
        }
        list += listeners
        if let vm { list.append((Handover.vm, vm)) }
        return list
    }

    /// How one listener stands toward the store: the name it is handed
    /// over under now, the name it came back under (if it did), and
    /// whether a socket unit owns it (then it never goes in the store).
    struct ListenerEntry: Equatable {
        var name: String
        var handedName: String?
        var activated: Bool
    }

    /// What to change in the store once serving: names to take out, and
    /// names of `outgoing` to put in. On a first start everything not a
    /// socket unit's goes in; after a hand-over the store holds it all
    /// already, and only a listener made anew (or handed over under an
    /// earlier version's name) goes in, in place of the one it replaces.
    /// Stored listeners that a socket unit's replace (`replaced`) leave.
    static func storeChanges(afterHandover: Bool, listeners: [ListenerEntry], replaced: [String],
                             outgoing: [String]) -> (remove: [String], store: [String]) {
        let activated = Set(listeners.filter(\.activated).map(\.name))
        var remove = replaced
        var store = outgoing.filter { !activated.contains($0) }
        if afterHandover {
            let changed = listeners.filter { !$0.activated && $0.handedName != $0.name }
            remove += changed.compactMap(\.handedName)
            let names = Set(changed.map(\.name))
            store = store.filter { names.contains($0) }
        }
        return (remove, store)
    }
}

/// Handed-over fds that this server cannot serve without splitting the VM
/// from its host clients. Start-up stops with exit status 2 and touches
/// nothing.
public enum HandoverError: Error, Equatable, Sendable, CustomStringConvertible {
    /// More than one fd came under `name`.
    case duplicate(name: String, count: Int)
    /// Fds came (named `handed`), but no shared memory among them.
    case noSharedMemory(handed: [String])
    /// The handed memory could not be examined.
    case sharedMemoryUnreadable(SystemError)
    case sharedMemoryNotARegularFile
    case sharedMemorySize(actual: UInt64, expected: UInt64)
    /// It holds another layout header than the layout being served.
    case sharedMemoryHeader
    /// A region of the layout lacks one of its two eventfds.
    case missingEventFDs(region: Int, regionCount: Int)
    case notAnEventFD(name: String)
    /// Eventfds came for regions beyond the layout's.
    case moreRegions(regionCount: Int)
    /// More than one listener came for one socket.
    case duplicateListener(base: String, names: [String])

    public var reason: String {
        switch self {
        case let .duplicate(name, count): return "\(count) fds were handed back as \(name), not one"
        case let .noSharedMemory(handed):
            return "fds were handed back (\(handed.joined(separator: ", "))) but no \(Handover.sharedMemory)"
        case let .sharedMemoryUnreadable(error): return "the handed-back shared memory cannot be read: \(error)"
        case .sharedMemoryNotARegularFile: return "the handed-back shared memory is not a regular file"
        case let .sharedMemorySize(actual, expected): return "the handed-back shared memory is \(actual) bytes, the layout needs \(expected)"
        case .sharedMemoryHeader: return "the handed-back shared memory holds another layout header than the layout being served"
        case let .missingEventFDs(region, regionCount):
            return "region \(region)'s eventfds were not handed back (\(Handover.guestToHost(region)), \(Handover.hostToGuest(region))); "
                + "the layout has \(regionCount) regions"
        case let .notAnEventFD(name): return "\(name) is not an eventfd"
        case let .moreRegions(regionCount): return "eventfds for more than the layout's \(regionCount) regions were handed back"
        case let .duplicateListener(base, names):
            return "more than one listening socket was handed back as \(base) (\(names.joined(separator: ", ")))"
        }
    }

    public var description: String { "cannot resume the running VM's shared memory: \(reason); nothing was changed" }
}
