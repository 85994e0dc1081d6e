import Descriptors
import Glibc
import Synchronization

/// The orchestrator: takes the instance lock, creates the shared memory,
/// the eventfds and both sockets, serves QEMU and host clients on one libuv
/// loop until SIGINT, SIGTERM or SIGHUP, then closes everything and removes
/// what it created.
public final class Server {
    public let configuration: ServerConfiguration
    private let events: ServerEventSink

    private var loop: EventLoop?
    /// Readiness of every peer socket, through one poll handle.
    private var peers: ReadinessSet?
    private var listeners: [Listener] = []
    private var signals: [SignalHandle] = []
    /// Open host clients by fd number.
    private let clients = FDTable<ClientConnection>()
    private var vm: VMConnection?
    /// Set once the server starts closing everything.
    private var stopping = false
    /// What the running server serves (for status requests).
    private var servedResources: ServedResources?
    /// When the VM attached (seconds since the epoch, UTC).
    private var vmSince: Int?
    /// Peers refused at accept by the access policy.
    private var peersRefused = 0
    // The service manager's STATUS=, at most once a second, only when it
    // changed; the timer (armed only then) sends a change that came sooner.
    private var statusTimer: TimerHandle?
    /// What the published line says (VM pid, served, refused): compared
    /// each turn instead of the line, which is built only when it changed.
    private var publishedStatus: (vm: Int32?, served: Int, refused: Int)?
    private var statusPublishedAt: UInt64?
    /// The service manager keeps our fds: on stop the files stay for the
    /// next server process of this VM.
    private var handingOver = false

    /// Undecided host clients, oldest (earliest deadline) first.
    private let pending = PendingList()
    /// Who holds the pending handshakes (counted by process and user).
    private var shares: PendingShares
    /// Processes whose pending connections were closed to make room, and
    /// how many; each is logged once when it first goes over its share and
    /// once when it holds none again.
    private var overShare: [Int32: Int] = [:]
    private var handshakeTimer: TimerHandle?
    /// Connections of processes at their pending cap, held open without a
    /// byte either way (oldest first) instead of closed: a process that
    /// reconnects whatever is closed would otherwise keep the server (and
    /// a core) busy. Closed after the handshake timeout, or when there are
    /// `maximumHeld` (the oldest first).
    private var held: [(fd: OwnedFD, deadline: UInt64)] = []
    private var heldStart = 0
    private var heldTimer: TimerHandle?
    private var maximumHeld = 0
    /// Flushes the event sink before the loop waits.
    private var beforeWaiting: PrepareHandle?
    /// How another thread stops the server (`requestStop`).
    private let stopRequest = Mutex<AsyncHandle?>(nil)

    // `ivserver launch`: the VM we started, and the timer that kills it
    // when it ignores a stop signal.
    private var launchedVM: (any LaunchedProcess)?
    private var vmStopTimer: TimerHandle?

    /// Events go to `events`, which is flushed on every turn of the loop.
    public init(configuration: ServerConfiguration, events: ServerEventSink) {
        self.configuration = configuration
        self.events = events
        shares = PendingShares(limits: configuration.pendingLimits)
    }

    private func report(_ event: ServerEvent) { events.record(event) }

    /// Runs until a stop signal or, with `launching`, until the VM it starts
    /// once both sockets listen has exited; returns how the VM ended. Throws
    /// (StartupError, SystemError, UVError, LaunchError) only while starting;
    /// whatever it created by then is removed before it returns, and a server
    /// that finds another one running changes nothing at all.
    @discardableResult
    public func run(launching launch: LaunchSpec? = nil) throws -> ChildProcess.Termination? {
        defer { events.flush() }
        let plan = configuration.layout
        let lock = try InstanceLock.acquire(path: configuration.lockPath)
        defer { lock.release() }
        // Under `launch`, after a re-exec: the VM is already our child.
        let handedChild = launch == nil ? nil : ProcessTable.takeHandedChild()
        // A previous server process of this VM may have left what the VM
        // holds in the service manager's store: then it is taken over, and
        // nothing is created or removed.
        let inheritance = try Inheritance.take(from: ServiceManager.takeHandedDescriptors(), plan: plan,
                                               sharedMemoryPath: configuration.sharedMemoryPath)
        var created: [CreatedFile] = []
        // The files stay at their paths while the service manager keeps the
        // fds, for the next server process of this VM.
        var filesOutliveUs = inheritance != nil && ServiceManager.isPresent
        defer { if !filesOutliveUs { for file in created.reversed() { file.remove() } } }

        let sharedMemory: SharedMemoryFile
        let channels: [RegionChannels]
        if let inheritance {
            sharedMemory = inheritance.sharedMemory
            channels = inheritance.channels
        } else {
            // We hold the lock, so nothing at our paths belongs to a live ivserver.
            if try SharedMemoryFile.removeLeftover(path: configuration.sharedMemoryPath,
                                                   replacingHeld: configuration.replaceHeldMemory) {
                report(.leftoverRemoved(path: configuration.sharedMemoryPath, what: "shared memory"))
            } else if events.isEnabled(.debug) {
                report(.detail("checked for a leftover shared memory at \(configuration.sharedMemoryPath): none"))
            }
            for path in [configuration.qemuSocketPath, configuration.clientSocketPath] {
                if try Listener.removeLeftover(path: path) {
                    report(.leftoverRemoved(path: path, what: "a socket nobody listened on"))
                } else if events.isEnabled(.debug) {
                    report(.detail("checked for a leftover socket at \(path): none"))
                }
            }
            sharedMemory = try SharedMemoryFile.create(
                path: configuration.sharedMemoryPath, size: UInt64(plan.size), header: LayoutEncoder.encode(plan),
                mode: mode_t(configuration.sharedMemoryMode))
            channels = try plan.regions.map { _ throws(SystemError) in try RegionChannels() }
        }
        if let file = sharedMemory.file { created.append(file) }
        let resources = ServedResources(
            plan: plan, sharedMemory: sharedMemory, channels: channels,
            qemuSocketPath: configuration.qemuSocketPath, events: events)
        servedResources = resources
        defer { servedResources = nil }

        let loop = try EventLoop()
        self.loop = loop
        defer {
            closeEverything()
            loop.close()
            self.loop = nil
        }
        let readiness = try ReadinessSet(loop: loop)
        peers = readiness
        for (path, handed, accept) in [
            (configuration.qemuSocketPath, inheritance?.qemuListener,
             { [unowned self] (fd: OwnedFD) in self.acceptVM(fd, resources: resources) }),
            (configuration.clientSocketPath, inheritance?.clientListener,
             { [unowned self] (fd: OwnedFD) in self.acceptClient(fd, resources: resources) }),
        ] {
            let onError = { [unowned self] (error: SystemError) in self.report(.acceptFailed(socket: path, error: "\(error)")) }
            let listener: Listener
            if let handed, !Self.isAbsent(path) {
                listener = try Listener(readiness: readiness, adopting: handed, path: path, mode: configuration.socketMode,
                                        group: configuration.socketGroup, onAccept: accept, onError: onError)
            } else {
                // Not handed back, or its file is gone (a runtime directory
                // made anew): a new one, stored in place of the old.
                handed?.close()
                listener = try Listener(readiness: readiness, path: path, mode: configuration.socketMode, group: configuration.socketGroup,
                                        onAccept: accept, onError: onError)
            }
            listeners.append(listener)
            created.append(listener.file)
        }
        let stopper = try AsyncHandle(loop: loop) { [unowned self] in self.stop(signal: 0, launch: launch) }
        stopRequest.withLock { $0 = stopper }
        handshakeTimer = try TimerHandle(loop: loop) { [unowned self] in self.expireHandshakes() }
        heldTimer = try TimerHandle(loop: loop) { [unowned self] in self.releaseHeld() }
        // Room for held connections: what the fd limit leaves after the
        // pending ones and 1024 for everything else, at most 16384.
        maximumHeld = min(16384, max(0, HostSystem.raiseOpenFileLimit() - configuration.maximumPending - 1024))
        beforeWaiting = try PrepareHandle(loop: loop) { [unowned self] in
            self.publishStatusIfChanged(resources)
            self.events.flush()
        }
        if ServiceManager.isPresent {
            statusTimer = try TimerHandle(loop: loop) { [unowned self] in self.publishStatusIfChanged(resources) }
        }
        signals.append(try SignalHandle(loop: loop, signal: SIGUSR1) { [unowned self] _ in
            self.reportState(resources)
        })
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signals.append(try SignalHandle(loop: loop, signal: signal) { [unowned self] signal in
                self.stop(signal: signal, launch: launch)
            })
        }
        signals.append(try SignalHandle(loop: loop, signal: SIGUSR2) { [unowned self] _ in
            self.reexecute(resources: resources)
        })

        if let inheritance {
            if let fd = inheritance.vm { resumeVM(fd, resources: resources) }

            report(.resumed(sharedMemoryInode: sharedMemory.inode, eventFDs: 2 * channels.count,
                            listeners: [inheritance.qemuListener, inheritance.clientListener].compactMap { $0 }.count, vm: vm?.peer))
        }
        if storeWithServiceManager(sharedMemory: sharedMemory, channels: channels, inheritance: inheritance) {
            filesOutliveUs = true
        }
        handingOver = filesOutliveUs
        report(.ready(configuration))
        ServiceManager.notifyReady()
        if let handedChild {
            try watchVM(handedChild, loop: loop)
        } else if let launch {
            try startVM(launch, loop: loop)
        }
        loop.run()
        return launchedVM?.termination
    }

    /// Any thread: stops the server as SIGTERM would (`run` then returns).
    /// Before `run` has set up its loop, and after it returned, it does nothing.
    public func requestStop() {
        stopRequest.withLock { $0?.wake() }
    }

    /// `signal` 0: `requestStop`.
    private func stop(signal: Int32, launch: LaunchSpec?) {
        guard let vm = launchedVM, vm.termination == nil, let launch else {
            report(.stopping(signal: signal, handingOver: handingOver))
            closeEverything()
            return
        }
        // The VM goes first; we follow when it exits.
        report(.vmSignalled(pid: vm.pid, signal: signal, timeoutMilliseconds: launch.stopTimeoutMilliseconds))
        vm.signal(signal)
        if vmStopTimer == nil, let loop {
            vmStopTimer = try? TimerHandle(loop: loop) { [unowned self] in
                guard let vm = self.launchedVM, vm.termination == nil else { return }
                self.report(.vmKilled(pid: vm.pid))
                vm.signal(SIGKILL)
            }
            vmStopTimer?.arm(milliseconds: launch.stopTimeoutMilliseconds)
        }
    }

    private func startVM(_ launch: LaunchSpec, loop: EventLoop) throws {
        ProcessTable.closeInheritedDescriptorsOnExec()
        let arguments = launch.arguments + configuration.qemuArguments
        do {
            let vm = try ChildProcess(loop: loop, arguments: arguments, environment: launch.environment) { [unowned self] termination in
                if let pid = self.launchedVM?.pid { self.report(.vmExited(pid: pid, termination: termination)) }
                self.closeEverything()
            }
            launchedVM = vm
            report(.vmLaunched(pid: vm.pid, command: arguments))
        } catch {
            throw LaunchError(command: launch.arguments[0], reason: error.description, shellStatus: ChildProcess.shellStatus(forSpawnError: error.code))
        }
    }

    // MARK: what operators see

    /// "VM pid 4242 attached since 12:01:07 UTC; 37 clients served, 1 refused"
    private func statusLine(_ resources: ServedResources) -> String {
        let vmPart = vm.map { vm in
            "VM pid \(vm.peer.map { String($0.pid) } ?? "?") attached since \(Self.clockTime(vmSince ?? 0)) UTC"
        } ?? "no VM attached"
        return "\(vmPart); \(resources.served.reduce(0, +)) clients served, \(resources.refused + peersRefused) refused"
    }

    private static func clockTime(_ second: Int) -> String {
        let day = second % 86400
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(day / 3600)):\(two(day / 60 % 60)):\(two(day % 60))"
    }

    /// Keeps `systemctl status` current: sends STATUS= when the line
    /// changed, at most once a second (the timer sends a change that came
    /// sooner). Without a service manager nothing is built.
    private func publishStatusIfChanged(_ resources: ServedResources) {
        guard let timer = statusTimer else { return }
        let current = (vm: vm.map { $0.peer?.pid ?? 0 }, served: resources.served.reduce(0, +),
                       refused: resources.refused + peersRefused)
        if let published = publishedStatus, published == current { return }
        let now = timer.now
        if let last = statusPublishedAt, now < last + 1000 {
            timer.arm(milliseconds: last + 1000 - now)
            return
        }
        ServiceManager.notify("STATUS=" + statusLine(resources))
        publishedStatus = current
        statusPublishedAt = now
    }

    /// SIGUSR1: the whole state, in the log.
    private func reportState(_ resources: ServedResources) {
        for line in stateLines(resources) { report(.state(line)) }
    }

    /// The whole state, a line each: for SIGUSR1 and `ivctl status`.
    private func stateLines(_ resources: ServedResources) -> [String] {
        let plan = configuration.layout
        var lines = ["layout \(configuration.layoutSource): \(plan.regionCount) regions; shared memory \(configuration.sharedMemoryPath) "
            + "(inode \(resources.sharedMemory.inode), \(resources.sharedMemory.size) bytes)"]
        if let vm {
            let vectors = vm.peer.flatMap { resources.doorbellVectors.vectors(ofProcess: $0.pid) }.map(String.init) ?? "unknown"
            lines.append("VM pid \(vm.peer.map { String($0.pid) } ?? "?") uid \(vm.peer.map { String($0.uid) } ?? "?") "
                + "attached since \(Self.clockTime(vmSince ?? 0)) UTC, vectors=\(vectors)")
        } else {
            lines.append("no VM attached")
        }
        for region in plan.regions {
            lines.append("region '\(region.name)' (#\(region.index)): \(resources.served[region.index]) clients served")
        }
        lines.append("\(resources.refused) clients refused after connecting, \(peersRefused) peers refused by the access policy; "
            + "\(shares.total) handshakes pending")
        return lines
    }

    /// The VM the image before a re-exec started: watched on until it ends.
    private func watchVM(_ pid: Int32, loop: EventLoop) throws {
        launchedVM = try InheritedChild(loop: loop, pid: pid) { [unowned self] termination in
            self.report(.vmExited(pid: pid, termination: termination))
            self.closeEverything()
        }
        report(.vmWatched(pid: pid))
    }

    /// Closes listeners, connections, the timer and signal handles; the loop
    /// then runs out of work and `run` returns.
    private func closeEverything() {
        stopping = true
        listeners.forEach { $0.close() }
        listeners = []
        vm?.closeSilently()
        for client in clients.values { client.close() }
        handshakeTimer?.close()
        handshakeTimer = nil
        heldTimer?.close()
        heldTimer = nil
        while heldStart < held.count { takeOldestHeld().close() }
        statusTimer?.close()
        statusTimer = nil
        vmStopTimer?.close()
        vmStopTimer = nil
        signals.forEach { $0.close() }
        signals = []
        beforeWaiting?.close()
        beforeWaiting = nil
        stopRequest.withLock { handle in
            handle?.close()
            handle = nil
        }
        peers?.close()
        peers = nil
    }

    /// SIGUSR2: a planned restart or upgrade without a service manager. The
    /// process execs the binary now at its path (same pid, same arguments),
    /// handing the new image the memory, the eventfds, both listeners and
    /// the VM's connection, which it takes over as after a systemd restart.
    /// If the exec fails, this image keeps serving with everything as it was.
    private func reexecute(resources: ServedResources) {
        var fds = handOverList(sharedMemory: resources.sharedMemory, channels: resources.channels)
        if let vm { fds.append((StoredName.vm, vm.rawFD)) }
        report(.reexecuting)
        events.flush()
        // Under `launch` the VM stays this process's child across the exec.
        let child = launchedVM.flatMap { $0.termination == nil ? $0.pid : nil }
        let failure = ProcessTable.reexecute(handing: fds, child: child)
        report(.reexecFailed(reason: SystemError("execve", errno: failure).errnoText))
    }

    private static func isAbsent(_ path: String) -> Bool {
        if case .absent? = try? ExistingPath.inspect(path) { return true }
        return false
    }

    // MARK: the service manager's store

    /// Puts what the VM holds (memory, eventfds) and both listening sockets
    /// in the service manager's fd store, so that they outlive this process;
    /// false without a service manager. What was handed back is in the store
    /// already; only a listener made anew replaces its stored one.
    private func storeWithServiceManager(sharedMemory: SharedMemoryFile, channels: [RegionChannels],
                                         inheritance: Inheritance?) -> Bool {
        guard ServiceManager.isPresent else { return false }
        var stored = handOverList(sharedMemory: sharedMemory, channels: channels)
        if inheritance != nil {
            // The store holds what was handed back; only a listener made anew replaces its stored one.
            let remade = [(StoredName.qemuListener, listeners[0]), (StoredName.clientListener, listeners[1])]
                .filter { !$0.1.adopted }.map(\.0)
            for name in remade { ServiceManager.removeStored(name: name) }
            stored = stored.filter { remade.contains($0.name) }
        }
        let failed = ServiceManager.store(stored)
        for name in failed { report(.storeFailed(name: name)) }
        return failed.isEmpty
    }

    /// What outlives this process, by name: the memory, the eventfds, both
    /// listeners (for the store, and for SIGUSR2's re-exec with the VM's
    /// connection added).
    private func handOverList(sharedMemory: SharedMemoryFile, channels: [RegionChannels]) -> [(name: String, fd: Int32)] {
        Inheritance.storedNames(sharedMemory: sharedMemory, channels: channels)
            + [(StoredName.qemuListener, listeners[0].rawFD), (StoredName.clientListener, listeners[1].rawFD)]
    }

    /// The VM's connection, handed back: served on as it is.
    private func resumeVM(_ fd: OwnedFD, resources: ServedResources) {
        guard let peers else { return }
        let peer = try? UnixSocket.peerCredentials(fd)
        let connection = makeVMConnection(PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 256), resources: resources,
                                          storeIt: !ServiceManager.isPresent)
        connection.resume()
    }

    /// `storeIt`: put the connection in the service manager's store (a
    /// connection the manager handed back is in it already).
    private func makeVMConnection(_ socket: PeerSocket, resources: ServedResources, storeIt: Bool = true) -> VMConnection {
        let connection = VMConnection(socket: socket, resources: resources) { [unowned self] closed in
            guard self.vm === closed else { return }
            self.vm = nil
            self.vmSince = nil
            // The VM left. (When the server stops, its connection stays
            // stored for the next server process of this VM.)
            if !self.stopping { ServiceManager.removeStored(name: StoredName.vm) }
        }
        vm = connection
        vmSince = HostSystem.currentSecond()
        // While attached, the connection outlives this process in the store.
        if storeIt && ServiceManager.isPresent {
            for name in ServiceManager.store([(StoredName.vm, connection.rawFD)]) { report(.storeFailed(name: name)) }
        }
        return connection
    }

    // MARK: accepting

    /// SO_PEERCRED and the access policy: the peer's credentials when it
    /// may stay, nil when it was refused (and closed here). A peer whose
    /// credentials cannot be read is refused.
    private func admit(_ fd: OwnedFD, on path: String) -> PeerCredentials? {
        let (peer, allowed) = configuration.accessPolicy.check(fd)
        guard let peer, allowed else {
            peersRefused += 1
            report(.peerRefused(socket: path, peer: peer))
            fd.close()
            return nil
        }
        return peer
    }

    private func acceptVM(_ fd: OwnedFD, resources: ServedResources) {
        guard let peer = admit(fd, on: configuration.qemuSocketPath) else { return }
        if let current = vm {
            if current.isAlive {
                report(.vmRefused(peer: peer, current: current.peer))
                // 8 bytes into a fresh socket's empty buffer cannot block;
                // if the peer is already gone there is nothing to tell it.
                _ = try? UnixSocket.send(fd, QemuHandshake.refusal.payload[...])
                fd.close()
                return
            }
            // It hung up, but its end of stream has not been read yet.
            current.close(reason: "QEMU hung up")
        }
        guard let peers else { return }
        makeVMConnection(PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 256), resources: resources).start()
    }

    private func acceptClient(_ fd: OwnedFD, resources: ServedResources) {
        guard let peer = admit(fd, on: configuration.clientSocketPath),
              let peers, let timer = handshakeTimer
        else { return }
        // A newcomer within its share always gets a slot; a process at its
        // own cap is turned away; when a user's or the total cap is full, a
        // connection of whoever is over their share makes room.
        switch shares.admit(pid: peer.pid, uid: peer.uid) {
        case .admit:
            break
        case .refuse:
            noteOverShare(pid: peer.pid, uid: peer.uid, cap: .process)
            hold(fd)
            return
        case let .admitAfterClosing(victim, pid, uid, cap):
            noteOverShare(pid: pid, uid: uid, cap: cap)
            clients[Int32(victim)]?.closeToMakeRoom()
        }
        let socket = PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 64)
        let connection = ClientConnection(
            socket: socket, resources: resources, deadline: timer.now + configuration.handshakeTimeoutMilliseconds,
            owner: self)
        clients[connection.slot] = connection
        addPending(connection)
        connection.start()
    }

    /// Counts a connection closed because `pid` is over its share; logs the
    /// process the first time.
    private func noteOverShare(pid: Int32, uid: UInt32, cap: PendingShares.Cap) {
        if overShare[pid] == nil {
            overShare[pid] = 0
            report(.pendingShareExceeded(pid: pid, uid: uid, cap: cap, limits: configuration.pendingLimits))
        }
        overShare[pid]! += 1
    }

    // MARK: held connections

    private func hold(_ fd: OwnedFD) {
        guard maximumHeld > 0, let timer = heldTimer else { return fd.close() }
        if held.count - heldStart >= maximumHeld { takeOldestHeld().close() }
        let deadline = timer.now + configuration.handshakeTimeoutMilliseconds
        if held.count == heldStart { timer.arm(milliseconds: configuration.handshakeTimeoutMilliseconds) }
        held.append((fd, deadline))
    }

    private func takeOldestHeld() -> OwnedFD {
        let fd = held[heldStart].fd
        heldStart += 1
        if heldStart == held.count {
            held.removeAll(keepingCapacity: true)
            heldStart = 0
        } else if heldStart >= 4096 && heldStart * 2 >= held.count {
            held.removeFirst(heldStart)
            heldStart = 0
        }
        return fd
    }

    private func releaseHeld() {
        guard let timer = heldTimer else { return }
        let now = timer.now
        while heldStart < held.count, held[heldStart].deadline <= now { takeOldestHeld().close() }
        if heldStart < held.count { timer.arm(milliseconds: held[heldStart].deadline - now) }
    }

    // MARK: handshake deadlines
    //
    // Every client gets the same timeout, so accept order is deadline order:
    // a list ordered by accept time and one timer armed for its head cover
    // any number of pending clients. The timer is armed only while the list
    // is non-empty, so an idle server has nothing to wake it.

    private func addPending(_ connection: ClientConnection) {
        pending.append(connection)
        shares.add(Int(connection.slot), pid: connection.peerPID, uid: connection.peerUID)
        if shares.total == 1 {
            handshakeTimer?.arm(milliseconds: configuration.handshakeTimeoutMilliseconds)
            if events.isEnabled(.debug) { report(.detail("handshake timer armed for \(configuration.handshakeTimeoutMilliseconds) ms")) }
        }
    }

    @discardableResult
    private func removePending(_ connection: ClientConnection) -> Bool {
        guard pending.remove(connection) else { return false }
        let pid = connection.peerPID
        shares.remove(Int(connection.slot), pid: pid)
        if shares.total == 0 { handshakeTimer?.disarm() }
        if let closed = overShare[pid], shares.count(process: pid) == 0 {
            overShare[pid] = nil
            report(.pendingShareCleared(pid: pid, closed: closed))
        }
        return true
    }

    private func expireHandshakes() {
        guard let timer = handshakeTimer else { return }
        let now = timer.now
        while let oldest = pending.oldest, oldest.deadline <= now {
            oldest.timeOut(after: configuration.handshakeTimeoutMilliseconds)
            // Its close took it out of the list (else this would never end).
            precondition(pending.oldest !== oldest, "a timed-out client stayed pending")
        }
        if let oldest = pending.oldest { timer.arm(milliseconds: oldest.deadline - now) }
    }
}

// Everything runs on the loop's thread, which is the thread that calls
// `run`; `requestStop` alone may come from any other (it only wakes the loop
// through uv_async, under a lock).
extension Server: @unchecked Sendable {}

/// What `ivserver launch` starts: the VM's command (the ivshmem options are
/// appended) and how long it gets to stop.
public struct LaunchSpec: Sendable {
    public var arguments: [String]
    /// Full environment ("NAME=value"); nil to pass ours on.
    public var environment: [String]?
    public var stopTimeoutMilliseconds: UInt64

    public init(arguments: [String], environment: [String]? = nil, stopTimeoutMilliseconds: UInt64 = 10_000) {
        self.arguments = arguments
        self.environment = environment
        self.stopTimeoutMilliseconds = stopTimeoutMilliseconds
    }
}

/// The VM's command could not be started; `shellStatus` is 127 (not found)
/// or 126 (not executable), as a shell would say.
public struct LaunchError: Error, CustomStringConvertible {
    public var command: String
    public var reason: String
    public var shellStatus: Int32

    public var description: String { "cannot start the VM: \(reason)" }
}

extension Server: ClientConnectionOwner {
    func statusReport() -> [UInt8] {
        guard let resources = servedResources else { return [] }
        return Array((stateLines(resources).joined(separator: "\n") + "\n").utf8)
    }

    func clientLeftPending(_ client: ClientConnection) {
        guard removePending(client), events.isEnabled(.debug), let timer = handshakeTimer else { return }
        let took = timer.now + configuration.handshakeTimeoutMilliseconds - client.deadline
        report(.detail("client pid \(client.peerPID): handshake decided after \(took) ms"))
    }
    func clientClosed(_ client: ClientConnection) {
        if clients[client.slot] === client { clients[client.slot] = nil }
    }
}
