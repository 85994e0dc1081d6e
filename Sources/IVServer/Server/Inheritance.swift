import ServerCore
import LinuxSystem

/// The names under which the server keeps its fds in the service manager's
/// store, so that a restarted server of the same VM finds them.
enum StoredName {
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

/// A listening socket a previous server process of this VM handed on: the
/// name it was stored under, and the socket file it was bound to, when the
/// name says.
struct HandedListener {
    let fd: OwnedFD
    let name: String
    let file: FileIdentity?
}

/// Handed-back fds that this server cannot serve without splitting the VM
/// from its host clients (another layout, a missing eventfd). Start-up
/// stops with exit status 2 and touches nothing.
public struct ResumeError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { "cannot resume the running VM's shared memory: \(reason); nothing was changed" }
}

/// What a previous server process of this VM handed on through the service
/// manager: the memory and eventfds the VM holds, the listening sockets,
/// and the VM's connection while one was attached.
struct Inheritance {
    let sharedMemory: SharedMemoryFile
    let channels: [RegionChannels]
    let qemuListener: HandedListener?
    let clientListener: HandedListener?
    let vm: OwnedFD?

    /// nil when no fd of ours was handed (a fresh start); fds under other
    /// names are closed.
    static func take(from handed: [String: [OwnedFD]], plan: LayoutPlan, sharedMemoryPath: String) throws(ResumeError) -> Inheritance? {
        guard !handed.isEmpty else { return nil }
        func single(_ name: String) throws(ResumeError) -> OwnedFD? {
            guard let fds = handed[name] else { return nil }
            guard fds.count == 1 else { throw ResumeError("\(fds.count) fds were handed back as \(name), not one") }
            return fds[0]
        }
        guard let memory = try single(StoredName.sharedMemory) else {
            throw ResumeError("fds were handed back (\(handed.keys.sorted().joined(separator: ", "))) but no \(StoredName.sharedMemory)")
        }
        let sharedMemory = try SharedMemoryFile.takeOver(memory, path: sharedMemoryPath, size: UInt64(plan.size),
                                                      header: LayoutEncoder.encode(plan))
        var channels: [RegionChannels] = []
        for region in 0..<plan.regionCount {
            let names = (StoredName.guestToHost(region), StoredName.hostToGuest(region))
            guard let guestToHost = try single(names.0), let hostToGuest = try single(names.1) else {
                throw ResumeError("region \(region)'s eventfds were not handed back (\(names.0), \(names.1)); the layout has \(plan.regionCount) regions")
            }
            guard EventFD.isEventFD(guestToHost), EventFD.isEventFD(hostToGuest) else {
                throw ResumeError("\(names.0) or \(names.1) is not an eventfd")
            }
            channels.append(RegionChannels(adopting: guestToHost, hostToGuest))
        }
        if handed[StoredName.guestToHost(plan.regionCount)] != nil {
            throw ResumeError("eventfds for more than the layout's \(plan.regionCount) regions were handed back")
        }
        func listener(_ base: String) throws(ResumeError) -> HandedListener? {
            let names = handed.keys.filter { StoredName.parseListener($0)?.base == base }
            guard let name = names.first else { return nil }
            guard names.count == 1, let fd = try single(name) else {
                throw ResumeError("more than one listening socket was handed back as \(base) (\(names.sorted().joined(separator: ", ")))")
            }
            return HandedListener(fd: fd, name: name, file: StoredName.parseListener(name)?.file)
        }
        return Inheritance(sharedMemory: sharedMemory, channels: channels, qemuListener: try listener(StoredName.qemuListener),
                           clientListener: try listener(StoredName.clientListener), vm: try single(StoredName.vm))
    }

    /// Every fd to keep in the manager's store, by name (not the VM's
    /// connection: that one is stored while a VM is attached).
    static func storedNames(sharedMemory: SharedMemoryFile, channels: [RegionChannels]) -> [(name: String, fd: Int32)] {
        var list = [(StoredName.sharedMemory, sharedMemory.fd.rawValue)]
        for (region, channel) in channels.enumerated() {
            list.append((StoredName.guestToHost(region), channel.guestToHost.rawValue))
            list.append((StoredName.hostToGuest(region), channel.hostToGuest.rawValue))
        }
        return list
    }
}

/// One of the server's listeners, with the names it is stored under.
struct ServedListener {
    let listener: Listener
    /// `StoredName.qemuListener` or `.clientListener`.
    let baseName: String
    /// The name it was handed back under, when it was.
    let handedName: String?

    /// The name to store it under now: with its socket file's identity.
    var storedName: String { StoredName.listener(baseName, file: listener.file.identity) }
}
