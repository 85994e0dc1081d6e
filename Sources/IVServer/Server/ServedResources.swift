/// What connections need from the server: the fds they hand out and where
/// to report.
final class ServedResources {
    let plan: LayoutPlan
    let sharedMemory: SharedMemoryFile
    let channels: [RegionChannels]
    let regionIndexByName: [String: Int]
    let qemuSocketPath: String
    let report: (ServerEvent) -> Void

    init(plan: LayoutPlan, sharedMemory: SharedMemoryFile, channels: [RegionChannels], qemuSocketPath: String,
         report: @escaping (ServerEvent) -> Void) {
        self.plan = plan
        self.sharedMemory = sharedMemory
        self.channels = channels
        self.qemuSocketPath = qemuSocketPath
        self.report = report
        var names: [String: Int] = [:]
        for region in plan.regions { names[region.name] = region.index }
        regionIndexByName = names
    }

    func rawFD(for attachment: QemuHandshake.Attachment) -> Int32 {
        switch attachment {
        case .sharedMemory: return sharedMemory.fd.rawValue
        case let .guestToHost(region): return channels[region].guestToHost.rawValue
        case let .hostToGuest(region): return channels[region].hostToGuest.rawValue
        }
    }
}
