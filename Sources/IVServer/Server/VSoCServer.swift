import EventLoop
import Glibc
import LinuxSystem
import ServerCore
import WireFormat

/// The vSoC protocol server: the instance lock, the shared memory, the
/// eventfds and both sockets, and QEMU and the host clients served on one
/// libuv loop. Its lifecycle is ServerCore's (`Servable`): `init` has no
/// side effects, `start` makes (or takes over) every file and socket,
/// `serve` runs the loop until `stop` (or `requestStop` from another
/// thread), `close` removes what `start` made. The service around it
/// (`VSoCService`) adds the signals, the service manager, SIGUSR2's
/// re-exec and the VM that `launch` starts.
public final class VSoCServer: Servable {
    /// Where a previous server process of this VM may have handed its fds over.
    public enum HandoverSource: Sendable {
        /// Nowhere: every file is made anew.
        case none
        /// The service manager (LISTEN_FDS) or SIGUSR2's re-exec; under a
        /// service manager, what is made is put in its store too.
        case serviceManager
    }

    public let configuration: VSoCServerConfiguration
    let events: EventSink
    private let handoverSource: HandoverSource
    private let control = ServingControl(of: "vSoC server")

    // Made by `start`.
    private var lock: InstanceLock?
    /// What `start` made, to remove at `close`.
    private var created: [CreatedFile] = []
    private(set) var resources: ServedResources?
    /// The memory's room on its filesystem.
    private var room: MemoryRoom?
    /// The QEMU socket's, then the client socket's.
    private var listening: [ServedListener] = []
    /// What a previous server process handed over, until `serve` has
    /// taken it in.
    private var handover: Handover?
    /// Listening sockets a systemd socket unit handed in, by path, until
    /// `start` has taken them.
    private var activated = ActivatedListeners()
    /// Listeners from the fd store that a socket unit's replace: taken out
    /// of the store once serving.
    private var replacedStoredListeners: [String] = []
    /// Whether the files outlive this process: the service manager keeps
    /// their fds for the next server process of this VM.
    public private(set) var handsOverFiles = false

    // While serving.
    private var serving: ServingLoop? { control.serving }
    private var listeners: [Listener] = []
    private var gate: Gate
    private var clients: ClientAdmission?
    private(set) var vm: VMConnection?

    /// Events go to `events`, which is flushed on every turn of the loop.
    public init(configuration: VSoCServerConfiguration, events: EventSink, handover: HandoverSource = .none) {
        self.configuration = configuration
        self.events = events
        handoverSource = handover
        gate = Gate(policy: configuration.accessPolicy, events: events)
    }

    private func report(_ event: VSoCEvent) { events.record(event) }
    private func report(_ event: CoreEvent) { events.record(event) }

    // MARK: start

    /// Takes the instance lock, then what a previous server process of this
    /// VM handed over, if anything: that memory, those eventfds and
    /// listeners are taken over, and nothing is made or removed for them;
    /// otherwise everything is made anew. Throws (StartupError,
    /// SystemError, HandoverError) with whatever it made removed again; a
    /// server that finds another one running changes nothing at all.
    public func start() throws {
        precondition(control.state == .created, "started twice")
        do {
            lock = try InstanceLock.acquire(path: configuration.lockPath)
            let handover: Handover?
            switch handoverSource {
            case .none: handover = nil
            case .serviceManager:
                // A socket unit's listeners first (a first start when they
                // come alone), then what a previous process of this VM handed over.
                var handed = ServiceManager.takeHandedDescriptors()
                activated = ActivatedListeners.take(from: &handed, ownPrefix: HandoverName.prefix)
                handover = try Handover.receive(from: handed, plan: configuration.layout,
                                                sharedMemoryPath: configuration.sharedMemoryPath)
            }
            self.handover = handover
            // Files taken over from a previous process are not this
            // start's to remove: whoever handed their fds over still holds them.
            handsOverFiles = handover != nil && ServiceManager.isPresent
            try makeOrTakeOver(handover)
        } catch {
            close()
            throw error
        }
        control.started()
    }

    private func makeOrTakeOver(_ handover: Handover?) throws {
        let plan = configuration.layout
        let header = LayoutEncoder.encode(plan)
        let signalling = SignallingReset.signallingRanges(of: plan)
        let path = configuration.sharedMemoryPath
        let sharedMemory: SharedMemoryFile
        let channels: [RegionChannels]
        if let handover {
            sharedMemory = handover.sharedMemory
            channels = handover.channels
            // Taken when it was made (by an older version, perhaps not):
            // a VM maps it, so a failure is told, not fatal.
            do {
                try sharedMemory.takePages(signalling, whole: false, path: path)
                if configuration.preallocate { try sharedMemory.takePages([0..<sharedMemory.size], whole: true, path: path) }
            } catch {
                report(.memoryPagesNotTaken(reason: "\(error)"))
            }
        } else {
            // We hold the lock, so nothing at our paths belongs to a live ivserver.
            if try SharedMemoryFile.removeLeftover(path: configuration.sharedMemoryPath,
                                                   replacingHeld: configuration.replaceHeldMemory) {
                report(.leftoverRemoved(path: configuration.sharedMemoryPath, what: "shared memory"))
            } else if events.isEnabled(.debug) {
                report(.detail("checked for a leftover shared memory at \(configuration.sharedMemoryPath): none"))
            }
            sharedMemory = try SharedMemoryFile.create(
                path: path, size: UInt64(plan.size), header: header, mode: mode_t(configuration.sharedMemoryMode),
                reserving: signalling, preallocate: configuration.preallocate)
            channels = try plan.regions.map { _ throws(SystemError) in try RegionChannels() }
        }
        if let file = sharedMemory.file { created.append(file) }
        room = MemoryRoom(memory: sharedMemory, touchable: SignallingReset.touchableRanges(of: plan, headerSize: header.count),
                          path: path, elsewhere: "another --shm-path")
        room?.checkAtStart(events: events)
        resources = ServedResources(plan: plan, sharedMemory: sharedMemory, channels: channels,
                                    qemuSocketPath: configuration.qemuSocketPath, events: events)
        for (base, path, handed) in [(HandoverName.qemuListener, configuration.qemuSocketPath, handover?.qemuListener),
                                     (HandoverName.clientListener, configuration.clientSocketPath, handover?.clientListener)] {
            let socket: ListeningSocket
            if let unit = activated.take(path: path) {
                // The socket unit's: it keeps the file. A stored one for the
                // same path (from before the unit) goes.
                if let handed {
                    handed.fd.close()
                    replacedStoredListeners.append(handed.name)
                }
                socket = try ListeningSocket.activated(unit.fd, path: path)
                listening.append(ServedListener(socket: socket, baseName: base, handedName: nil, activatedName: unit.name))
                report(.detail("serving on \(path), handed in by a socket unit (\(unit.name))"))
                continue
            }
            if let handed, try handed.isStill(at: path) {
                socket = try ListeningSocket.takeOver(handed.fd, path: path, mode: configuration.socketMode, group: configuration.socketGroup)
            } else {
                // Not handed over, or its file is gone (a runtime directory
                // made anew) or replaced: a new one, handed over in place of the old.
                handed?.fd.close()
                if try ListeningSocket.removeLeftover(path: path) {
                    report(.leftoverRemoved(path: path, what: "a socket nobody listened on"))
                } else if events.isEnabled(.debug) {
                    report(.detail("checked for a leftover socket at \(path): none"))
                }
                socket = try ListeningSocket.make(path: path, mode: configuration.socketMode, group: configuration.socketGroup)
            }
            listening.append(ServedListener(socket: socket, baseName: base, handedName: handed?.name))
            created.append(socket.file)
        }
        let stray = activated.closeRest()
        for name in activated.ignored { report(.handedFDIgnored(name: name, reason: "not a listening UNIX socket")) }
        for path in stray { report(.handedFDIgnored(name: path, reason: "a listener on a path that is neither --qemu-sock nor --client-sock")) }
    }

    // MARK: serving

    /// Serves until `stop`: every connection is handled on this thread.
    public func serve(whenReady: (ServingLoop) throws -> Void = { _ in }) throws {
        guard let resources else { preconditionFailure("serve before start") }
        let serving = try control.beginServing(events: events, closeConnections: { [unowned self] in
            self.listeners.forEach { $0.close() }
            self.vm?.closeSilently()
            self.clients?.closeAll()
        }, stopRequested: { [unowned self] in
            self.report(.stopping(signal: 0, handingOver: self.handsOverFiles))
            self.stop()
        })
        listeners = try zip(listening, [acceptVM, acceptClient]).map { served, accept throws(SystemError) in
            let path = served.socket.path
            return try Listener(served.socket, readiness: serving.readiness, onAccept: accept,
                                onError: { [unowned self] error in self.report(.acceptFailed(socket: path, error: "\(error)")) })
        }
        clients = try ClientAdmission(configuration: configuration, resources: resources, serving: serving, events: events,
                                      answers: { [unowned self] query in self.answer(query) })
        if let handover {
            if let fd = handover.vm { takeOverVM(fd) }
            report(.tookOver(sharedMemoryInode: resources.sharedMemory.inode, eventFDs: 2 * handover.channels.count,
                             listeners: [handover.qemuListener, handover.clientListener].compactMap { $0 }.count, vm: vm?.peer))
            self.handover = nil
        }
        if handoverSource == .serviceManager && ServiceManager.isPresent { storeWithServiceManager() }
        try control.run(whenReady: whenReady) { report(.ready(configuration)) }
    }

    /// Starts, serves until `stop` or `requestStop`, and closes.
    public func run() throws {
        try start()
        defer { close() }
        try serve()
    }

    /// Any thread: stops the server as SIGTERM would (`serve` then
    /// returns); asked before it serves, it stops as soon as it does.
    public func requestStop() {
        control.requestStop()
    }

    /// Closes the listeners, the connections and the handles; the loop
    /// then runs out of work and `serve` returns. Loop thread only.
    public func stop() {
        control.stop()
    }

    /// After `serve` (or a failed `start`): removes the files `start`
    /// made, unless they are handed over (the service manager keeps the
    /// fds for the next server process of this VM), releases the lock and
    /// closes the loop.
    public func close() {
        guard control.beginClosing() else { return }
        listeners = []
        clients = nil
        listening.forEach { $0.socket.fd.close() }
        listening = []
        if !handsOverFiles { created.reversed().forEach { $0.remove() } }
        created = []
        resources = nil
        room = nil
        handover = nil
        lock?.release()
        lock = nil
        control.closed()
        events.flush()
    }

    // MARK: the VM

    private func acceptVM(_ fd: OwnedFD) {
        guard let peer = gate.admit(fd, on: configuration.qemuSocketPath, refusing: false) else { return }
        if let current = vm {
            if current.isAlive {
                report(.vmRefused(peer: peer, current: current.peer))
                Gate.refuse(fd)
                return
            }
            // It hung up, but its end of stream has not been read yet.
            current.close(reason: "QEMU hung up")
        }
        let connection = makeVMConnection(fd, peer: peer, handedOver: false)
        connection.start()
        // A peer that hung up before its handshake went out is closed (and
        // logged as gone) already: it never was attached.
        guard vm === connection, !connection.isClosed else { return }
        if storesVM { storeVM(connection) }
    }

    /// The VM's connection, handed over: served on as it is.
    private func takeOverVM(_ fd: OwnedFD) {
        makeVMConnection(fd, peer: try? UnixSocket.peerCredentials(fd), handedOver: true).takeOver()
    }

    @discardableResult
    private func makeVMConnection(_ fd: OwnedFD, peer: PeerCredentials?, handedOver: Bool) -> VMConnection {
        guard let serving, let resources else { preconditionFailure("a VM before the server serves") }
        let socket = PeerSocket(readiness: serving.readiness, fd: fd, peer: peer, readSize: 256)
        let connection = VMConnection(socket: socket, resources: resources, handedOver: handedOver) { [unowned self] closed in
            guard self.vm === closed else { return }
            self.vm = nil
            // The VM left. (When the server stops, its connection stays
            // stored for the next server process of this VM.)
            if self.control.state == .serving && closed.wasAttached && self.storesVM {
                ServiceManager.removeStored(name: HandoverName.vm)
            }
        }
        vm = connection
        return connection
    }

    // MARK: the host clients

    private func acceptClient(_ fd: OwnedFD) {
        guard let peer = gate.admit(fd, on: configuration.clientSocketPath, refusing: false) else { return }
        clients?.accept(fd, peer: peer)
    }

    private func answer(_ query: ClientHandshake.Query) -> [UInt8] {
        switch query {
        case .status: return Array((stateLines().joined(separator: "\n") + "\n").utf8)
        case .vmInfo: return Array(HALDProtocol.VMInfo.text(vm?.info).utf8)
        case .layout:
            guard let resources else { return [] }
            return HALDProtocol.LayoutAnswer.encode(sharedMemorySize: resources.sharedMemory.size, header: LayoutEncoder.encode(configuration.layout))
        }
    }

    // MARK: the handover

    /// Under a service manager that keeps our fds, the VM's connection is
    /// in its store while attached.
    private var storesVM: Bool { handoverSource == .serviceManager && ServiceManager.isPresent }

    private func storeVM(_ connection: VMConnection) {
        let failed = connection.withDescriptor { ServiceManager.store([(HandoverName.vm, $0)]) } ?? []
        for name in failed { report(.storeFailed(name: name)) }
    }

    /// What outlives this process, by name: the memory, the eventfds, both
    /// listeners, and with `vm` the VM's connection (for SIGUSR2's re-exec;
    /// the service manager gets the VM's when it attaches).
    func handoverList(includingVM: Bool) -> [(name: String, fd: Int32)] {
        guard let resources else { return [] }
        var list = [(HandoverName.sharedMemory, resources.sharedMemory.fd.rawValue)]
        for (region, channel) in resources.channels.enumerated() {
            list.append((HandoverName.guestToHost(region), channel.guestToHost.rawValue))
            list.append((HandoverName.hostToGuest(region), channel.hostToGuest.rawValue))
        }
        list += listening.map { ($0.handoverName, $0.socket.fd.rawValue) }
        if includingVM, let vm = vm?.withDescriptor({ (HandoverName.vm, $0) }) { list.append(vm) }
        return list
    }

    /// Puts what the VM holds (memory, eventfds) and both listening sockets
    /// in the service manager's store, so that they outlive this process.
    /// What was handed over is in the store already; only a listener made
    /// anew (or handed over under an earlier version's name) goes in, in
    /// place of the one it replaces.
    private func storeWithServiceManager() {
        // A socket unit's listeners are handed in by the unit at every
        // start: they never go in the store, and stored ones they replace leave it.
        for name in replacedStoredListeners { ServiceManager.removeStored(name: name) }
        replacedStoredListeners = []
        let activatedNames = Set(listening.compactMap(\.activatedName))
        var stored = handoverList(includingVM: false).filter { !activatedNames.contains($0.name) }
        if handsOverFiles {
            let changed = listening.filter { $0.activatedName == nil && $0.handedName != $0.handoverName }
            for name in changed.compactMap(\.handedName) { ServiceManager.removeStored(name: name) }
            let names = Set(changed.map(\.handoverName))
            stored = stored.filter { names.contains($0.name) }
        }
        let failed = ServiceManager.store(stored)
        for name in failed { report(.storeFailed(name: name)) }
        if failed.isEmpty { handsOverFiles = true }
    }

    // MARK: what operators see

    /// What `systemctl status` shows: the VM, clients served and refused.
    public struct Status: Equatable {
        var vm: Int32?
        var served: Int
        var refused: Int
        var memoryShort = false
    }

    public var status: Status {
        guard let resources else { return Status(vm: nil, served: 0, refused: 0) }
        return Status(vm: vm.map { $0.peer?.pid ?? 0 }, served: resources.served.reduce(0, +), refused: resources.refused + gate.refused,
                      memoryShort: room?.shortfallAtStart != nil)
    }

    /// "VM pid 4242 attached since 12:01:07 UTC; 37 clients served, 1 refused"
    public func statusLine(_ status: Status) -> String {
        let vmPart = vm.map { vm in
            "VM pid \(vm.peer.map { String($0.pid) } ?? "?") attached since \(Self.clockTime(vm.attachedSince)) UTC"
        } ?? "no VM attached"
        return "\(vmPart); \(status.served) clients served, \(status.refused) refused" + (room?.statusFragment.map { "; " + $0 } ?? "")
    }

    static func clockTime(_ second: Int) -> String {
        let day = second % 86400
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(day / 3600)):\(two(day / 60 % 60)):\(two(day % 60))"
    }

    /// The whole state, a line each: for SIGUSR1 and `ivctl status`.
    public func stateLines() -> [String] {
        guard let resources else { return [] }
        let plan = configuration.layout
        var lines = ["layout \(configuration.layoutSource): \(plan.regionCount) regions; shared memory \(configuration.sharedMemoryPath) "
            + "(inode \(resources.sharedMemory.inode), \(resources.sharedMemory.size) bytes)"]
        if let room { lines.append(room.stateLine()) }
        if let vm {
            let vectors = vm.peer.flatMap { resources.doorbellVectors.vectors(ofProcess: $0.pid) }.map(String.init) ?? "unknown"
            lines.append("VM pid \(vm.peer.map { String($0.pid) } ?? "?") uid \(vm.peer.map { String($0.uid) } ?? "?") "
                + "attached since \(Self.clockTime(vm.attachedSince)) UTC, vectors=\(vectors)"
                + (vm.info.map { ", process started \(Self.clockTime($0.started)) UTC (start tick \($0.startTicks))" } ?? ""))
        } else {
            lines.append("no VM attached")
        }
        lines.append("a new VM finds the regions' data as it was left and every region's signalling state reset; "
            + (resources.lastReset.map { "at the last new VM's attach, \(SignallingReset.describe($0))" } ?? "no new VM attached yet"))
        for region in plan.regions {
            lines.append("region '\(region.name)' (#\(region.index)): \(resources.served[region.index]) clients served")
        }
        lines.append("\(resources.refused) clients refused after connecting, \(gate.refused) peers refused by the access policy; "
            + "\(clients?.pendingCount ?? 0) handshakes pending, \(clients?.waitingCount ?? 0) connections waiting for room")
        return lines
    }
}

// Everything runs on the loop's thread, which is the thread that calls
// `serve`; `requestStop` alone may come from any other (it only wakes the
// loop through uv_async, under a lock).
extension VSoCServer: @unchecked Sendable {}
