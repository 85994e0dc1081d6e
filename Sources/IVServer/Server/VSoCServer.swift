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
/// (`VSoCService`) adds the signals, SIGUSR2's re-exec and the VM that
/// `launch` starts. What a previous process handed over, and where to
/// hand over to, come in as values (`Handover.Source`).
public final class VSoCServer: Servable {
    public let configuration: VSoCServerConfiguration
    let events: EventSink
    /// The fds handed to this process, until `start` takes them.
    private var handed: [String: [OwnedFD]]
    /// Where what outlives this process goes; nil: nothing does.
    private let store: (any DescriptorStore)?
    public let control = ServingControl(of: "vSoC server")

    // Made by `start`.
    private var lock: InstanceLock?
    /// What `start` made, to remove at `close`.
    private var created: [CreatedFile] = []
    private(set) var resources: ServedResources?
    /// The memory's room on its filesystem.
    private var room: MemoryRoom?
    /// The two listening sockets.
    private var listening: (qemu: ServedListener, client: ServedListener)?
    private var servedListeners: [ServedListener] { listening.map { [$0.qemu, $0.client] } ?? [] }
    /// What a previous server process handed over, until `serve` has
    /// taken it in.
    private var handover: Handover.Received?
    /// Listening sockets a systemd socket unit handed in, by path, until
    /// `start` has taken them.
    private var activated = ActivatedListeners()
    /// Listeners from the fd store that a socket unit's replace: taken out
    /// of the store once serving.
    private var replacedStoredListeners: [String] = []
    /// Whether the files outlive this process: the store keeps their fds
    /// for the next server process of this VM.
    public private(set) var handsOverFiles = false

    // While serving.
    private var serving: ServingLoop? { control.serving }
    private var listeners: (qemu: Listener, client: Listener)?
    private var gate: Gate
    private var clients: ClientAdmission?
    private(set) var vm: VMConnection?

    /// Events go to `events`, which is flushed on every turn of the loop.
    /// `handover`: what a previous process of this VM handed to this one,
    /// and the store for what outlives it (by default neither).
    public init(configuration: VSoCServerConfiguration, events: EventSink, handover: Handover.Source = .none) {
        self.configuration = configuration
        self.events = events
        handed = handover.handed
        store = handover.store
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
            // A socket unit's listeners first (a first start when they
            // come alone), then what a previous process of this VM handed over.
            var handed = self.handed
            self.handed = [:]
            activated = ActivatedListeners.take(from: &handed, ownPrefix: Handover.prefix)
            let handover = try Handover.receive(from: handed, plan: configuration.layout,
                                                sharedMemoryPath: configuration.sharedMemoryPath)
            self.handover = handover
            // Files taken over from a previous process are not this
            // start's to remove: whoever handed their fds over still holds them.
            handsOverFiles = handover != nil && store != nil
            try makeOrTakeOver(handover)
        } catch {
            close()
            throw error
        }
        control.started()
    }

    private func makeOrTakeOver(_ handover: Handover.Received?) throws {
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
        let qemu = try listen(on: configuration.qemuSocketPath, as: Handover.qemuListener, handed: handover?.qemuListener)
        do {
            listening = (qemu, try listen(on: configuration.clientSocketPath, as: Handover.clientListener, handed: handover?.clientListener))
        } catch {
            qemu.socket.fd.close()
            throw error
        }
        let stray = activated.closeRest()
        for name in activated.ignored { report(.handedFDIgnored(name: name, reason: "not a listening UNIX socket")) }
        for path in stray { report(.handedFDIgnored(name: path, reason: "a listener on a path that is neither --qemu-sock nor --client-sock")) }
    }

    /// The listener on `path`: a socket unit's, the one handed over while
    /// its file is still there, or a new one.
    private func listen(on path: String, as base: String, handed: Handover.HandedListener?) throws -> ServedListener {
        let socket: ListeningSocket
        if let unit = activated.take(path: path) {
            // The socket unit's: it keeps the file. A stored one for the
            // same path (from before the unit) goes.
            if let handed {
                handed.fd.close()
                replacedStoredListeners.append(handed.name)
            }
            socket = try ListeningSocket.activated(unit.fd, path: path)
            report(.detail("serving on \(path), handed in by a socket unit (\(unit.name))"))
            return ServedListener(socket: socket, baseName: base, handedName: nil, activatedName: unit.name)
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
        created.append(socket.file)
        return ServedListener(socket: socket, baseName: base, handedName: handed?.name)
    }

    // MARK: serving

    /// Serves until `stop`: every connection is handled on this thread.
    public func serve(whenReady: (ServingLoop) throws -> Void = { _ in }) throws {
        guard let resources else { preconditionFailure("serve before start") }
        let serving = try control.beginServing(events: events, closeConnections: { [unowned self] in
            self.listeners?.qemu.close()
            self.listeners?.client.close()
            self.vm?.closeSilently()
            self.clients?.closeAll()
        }, stopRequested: { [unowned self] in
            self.report(.stopping(signal: 0, handingOver: self.handsOverFiles))
            self.stop()
        })
        guard let listening else { preconditionFailure("serve before start") }
        func listener(_ served: ServedListener, onAccept accept: @escaping (OwnedFD) -> Void) throws(SystemError) -> Listener {
            let path = served.socket.path
            return try Listener(served.socket, readiness: serving.readiness, onAccept: accept,
                                onError: { [unowned self] error in self.report(.acceptFailed(socket: path, error: "\(error)")) })
        }
        listeners = (qemu: try listener(listening.qemu, onAccept: acceptVM), client: try listener(listening.client, onAccept: acceptClient))
        clients = try ClientAdmission(configuration: configuration, resources: resources, serving: serving, events: events,
                                      answers: { [unowned self] query in self.answer(query) })
        if let handover {
            if let fd = handover.vm { takeOverVM(fd) }
            report(.tookOver(sharedMemoryInode: resources.sharedMemory.inode, eventFDs: 2 * handover.channels.count,
                             listeners: handover.listenerCount, vm: vm?.peer))
            self.handover = nil
        }
        if let store { storeForTheNextProcess(in: store) }
        try control.run(whenReady: whenReady) { report(.ready(configuration)) }
    }

    /// Starts, serves until `stop` or `requestStop`, and closes.
    public func run() throws {
        try start()
        defer { close() }
        try serve()
    }

    /// After `serve` (or a failed `start`): removes the files `start`
    /// made, unless they are handed over (the store keeps the
    /// fds for the next server process of this VM), releases the lock and
    /// closes the loop.
    public func close() {
        guard control.beginClosing() else { return }
        listeners = nil
        clients = nil
        servedListeners.forEach { $0.socket.fd.close() }
        listening = nil
        if !handsOverFiles { created.reversed().forEach { $0.remove() } }
        created = []
        resources = nil
        room = nil
        handover = nil
        handed.values.joined().forEach { $0.close() }
        handed = [:]
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
        if let store { storeVM(connection, in: store) }
    }

    /// The VM's connection, handed over: served on as it is.
    private func takeOverVM(_ fd: OwnedFD) {
        makeVMConnection(fd, peer: try? UnixSocket.peerCredentials(fd), handedOver: true).takeOver()
    }

    @discardableResult
    private func makeVMConnection(_ fd: OwnedFD, peer: PeerCredentials?, handedOver: Bool) -> VMConnection {
        guard let serving, let resources else { preconditionFailure("a VM before the server serves") }
        let socket = PeerSocket(readiness: serving.readiness, fd: fd, peer: peer, readSize: 256)
        let connection = VMConnection(socket: socket, resources: resources, handedOver: handedOver, owner: self)
        vm = connection
        return connection
    }

    /// The VM's connection closed: dropped (which ends its reference to us).
    func vmClosed(_ closed: VMConnection) {
        guard vm === closed else { return }
        vm = nil
        // The VM left. (When the server stops, its connection stays
        // stored for the next server process of this VM.)
        if control.state == .serving && closed.wasAttached { store?.remove(name: Handover.vm) }
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

    // MARK: the hand-over

    /// While attached, the VM's connection is in the store too.
    private func storeVM(_ connection: VMConnection, in store: any DescriptorStore) {
        let failed = connection.withDescriptor { store.store([(Handover.vm, $0)]) } ?? []
        for name in failed { report(.storeFailed(name: name)) }
    }

    /// What outlives this process, by name (`Handover.outgoing`); with
    /// `includingVM` the VM's connection too (SIGUSR2's re-exec; the store
    /// gets the VM's when it attaches).
    func handoverList(includingVM: Bool) -> [(name: String, fd: Int32)] {
        guard let resources else { return [] }
        return Handover.outgoing(sharedMemory: resources.sharedMemory.fd.rawValue, channels: resources.channels,
                                 listeners: servedListeners.map { ($0.handoverName, $0.socket.fd.rawValue) },
                                 vm: includingVM ? vm?.withDescriptor { $0 } : nil)
    }

    /// Puts what the VM holds (memory, eventfds) and the listeners in the
    /// store, so that they outlive this process: what `Handover.storeChanges` says.
    private func storeForTheNextProcess(in store: any DescriptorStore) {
        let outgoing = handoverList(includingVM: false)
        let changes = Handover.storeChanges(afterHandover: handsOverFiles, listeners: servedListeners.map(\.storeEntry),
                                            replaced: replacedStoredListeners, outgoing: outgoing.map(\.name))
        replacedStoredListeners = []
        for name in changes.remove { store.remove(name: name) }
        let wanted = Set(changes.store)
        let failed = store.store(outgoing.filter { wanted.contains($0.name) })
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
