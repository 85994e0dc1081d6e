import Descriptors
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
    let qemuListener: OwnedFD?
    let clientListener: OwnedFD?
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
        let sharedMemory = try SharedMemoryFile.adopt(memory, path: sharedMemoryPath, size: UInt64(plan.size),
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
        return Inheritance(sharedMemory: sharedMemory, channels: channels, qemuListener: try single(StoredName.qemuListener),
                           clientListener: try single(StoredName.clientListener), vm: try single(StoredName.vm))
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
