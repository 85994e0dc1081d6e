import LinuxSystem
import ServerCore

/// The names under which the server hands its fds over, to the service
/// manager's store or across SIGUSR2's re-exec, so that the next server
/// process of the same VM finds them.
enum HandoverName {
    /// Every name of the server's own begins so; any other handed fd is a
    /// socket unit's (ActivatedListeners).
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
    static func listener(_ base: String, file: FileIdentity) -> String {
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
}

/// Handed-over fds that this server cannot serve without splitting the VM
/// from its host clients (another layout, a missing eventfd). Start-up
/// stops with exit status 2 and touches nothing.
public struct HandoverError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { "cannot resume the running VM's shared memory: \(reason); nothing was changed" }
}

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

/// What a previous server process of this VM handed over (through the
/// service manager's store or a re-exec): the memory and eventfds the VM
/// holds, the listening sockets, and the VM's connection while one was
/// attached.
struct Handover {
    let sharedMemory: SharedMemoryFile
    let channels: [RegionChannels]
    let qemuListener: HandedListener?
    let clientListener: HandedListener?
    let vm: OwnedFD?

    /// The handover in `handed` (fds by name), checked against the layout;
    /// nil when none of ours came (a fresh start). Fds under other names
    /// are closed.
    static func receive(from handed: [String: [OwnedFD]], plan: LayoutPlan, sharedMemoryPath: String) throws(HandoverError) -> Handover? {
        guard !handed.isEmpty else { return nil }
        func single(_ name: String) throws(HandoverError) -> OwnedFD? {
            guard let fds = handed[name] else { return nil }
            guard fds.count == 1 else { throw HandoverError("\(fds.count) fds were handed back as \(name), not one") }
            return fds[0]
        }
        guard let memory = try single(HandoverName.sharedMemory) else {
            throw HandoverError("fds were handed back (\(handed.keys.sorted().joined(separator: ", "))) but no \(HandoverName.sharedMemory)")
        }
        let sharedMemory = try SharedMemoryFile.takeOver(memory, path: sharedMemoryPath, size: UInt64(plan.size),
                                                         header: LayoutEncoder.encode(plan))
        var channels: [RegionChannels] = []
        for region in 0..<plan.regionCount {
            let names = (HandoverName.guestToHost(region), HandoverName.hostToGuest(region))
            guard let guestToHost = try single(names.0), let hostToGuest = try single(names.1) else {
                throw HandoverError("region \(region)'s eventfds were not handed back (\(names.0), \(names.1)); the layout has \(plan.regionCount) regions")
            }
            guard EventFD.isEventFD(guestToHost), EventFD.isEventFD(hostToGuest) else {
                throw HandoverError("\(names.0) or \(names.1) is not an eventfd")
            }
            channels.append(RegionChannels(takingOver: guestToHost, hostToGuest))
        }
        if handed[HandoverName.guestToHost(plan.regionCount)] != nil {
            throw HandoverError("eventfds for more than the layout's \(plan.regionCount) regions were handed back")
        }
        func listener(_ base: String) throws(HandoverError) -> HandedListener? {
            let names = handed.keys.filter { HandoverName.parseListener($0)?.base == base }
            guard let name = names.first else { return nil }
            guard names.count == 1, let fd = try single(name) else {
                throw HandoverError("more than one listening socket was handed back as \(base) (\(names.sorted().joined(separator: ", ")))")
            }
            return HandedListener(fd: fd, name: name, file: HandoverName.parseListener(name)?.file)
        }
        return Handover(sharedMemory: sharedMemory, channels: channels, qemuListener: try listener(HandoverName.qemuListener),
                        clientListener: try listener(HandoverName.clientListener), vm: try single(HandoverName.vm))
    }
}

/// One of the server's listening sockets, with the names it is handed over under.
struct ServedListener {
    let socket: ListeningSocket
    /// `HandoverName.qemuListener` or `.clientListener`.
    let baseName: String
    /// The name it was handed over under, when it was.
    let handedName: String?
    /// The name a systemd socket unit handed it in under, when it did.
    var activatedName: String? = nil

    /// The name to hand it over under now: with its socket file's identity;
    /// a socket unit's keeps the unit's name, so that the next process
    /// (SIGUSR2's re-exec) tells it by its path again.
    var handoverName: String { activatedName ?? HandoverName.listener(baseName, file: socket.file.identity) }
}
