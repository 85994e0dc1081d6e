import ServerCore
import EventLoop
import Glibc
import Synchronization
import LinuxSystem
import WireFormat

/// The vSoC protocol server: the instance lock, the shared memory, the
/// eventfds and both sockets, and QEMU and the host clients served on one
/// libuv loop. Split as QEMU's contrib server is: `init` has no side
/// effects, `start` creates (or takes over) everything, `serve` runs the
/// loop until `stop` (or `requestStop` from another thread), `close`
/// removes what `start` created. Signals, the service manager and the VM
/// that `launch` starts are `ServerService`'s, around it.
public final class Server {
    public let configuration: ServerConfiguration
    let events: EventSink

    private var lock: InstanceLock?
    /// What `start` created, to remove at `close`.
    private var created: [CreatedFile] = []
    private(set) var loop: EventLoop?
    /// Readiness of every socket, through one poll handle.
    private var peers: ReadinessSet?
    /// Both listening sockets: the QEMU socket's, then the client socket's.
    private(set) var listeners: [ServedListener] = []
    /// Open host clients by fd number.
    private let clients = FDTable<ClientConnection>()
    private(set) var vm: VMConnection?
    /// Set once the server starts closing everything.
    private(set) var stopping = false
    /// What the running server serves (memory, eventfds, counters).
    private(set) var resources: ServedResources?
    /// Peers refused at accept by the access policy.
    private(set) var peersRefused = 0

    /// Undecided host clients, oldest (earliest deadline) first.
    private let pending = PendingList()
    /// Who holds the pending handshakes (counted by process and user).
    private var shares: PendingShares
    /// Processes over their share while the server was full, with what
    /// became of their connections since; each is logged once when it
    /// goes over and once when it has nothing pending or waiting again.
    private var overShare: [Int32: OverShare] = [:]
    private var handshakeTimer: TimerHandle?
    /// Connections waiting for room (the server was full and their process
    /// or user over its share): greeted in turn as room opens, closed only
    /// when they have waited out the handshake timeout without room.
    /// Waiting rather than closed: a process that reconnects whatever is
    /// closed would otherwise keep the server (and a core) busy.
    private var held = HeldConnections<AcceptedConnection>(capacity: 0)
    private var heldTimer: TimerHandle?
    /// Flushes the event sink before the loop waits.
    private var beforeWaiting: PrepareHandle?
    /// How another thread stops the server (`requestStop`).
    private let stopRequest = Mutex<AsyncHandle?>(nil)

    // What the service around the server is told (loop thread).
    /// A VM attached (not one resumed from a previous process): its
    /// connection, open and current while the hook runs.
    var onVMAttached: ((VMConnection) -> Void)?
    /// The VM left (not called while the server stops).
    var onVMDetached: (() -> Void)?
    /// Each turn of the loop, before it waits.
    var onTurn: (() -> Void)?
    /// `stop` began: the service closes its own handles, so the loop ends.
    var onStop: (() -> Void)?

    /// Events go to `events`, which is flushed on every turn of the loop.
    public init(configuration: ServerConfiguration, events: EventSink) {
        self.configuration = configuration
        self.events = events
        shares = PendingShares(limits: configuration.pendingLimits)
    }

    private func report(_ event: VSoCEvent) { events.record(event) }
    private func report(_ event: CoreEvent) { events.record(event) }

    /// A fresh start (or, under a service manager, `ServerService` passes
    /// what it handed back).
    public func start() throws {
        try start(inheriting: { nil })
    }

    /// Takes the instance lock, then `inheriting()` (evaluated under it:
    /// what a previous server process of this VM handed on): that memory,
    /// those eventfds and listeners are taken over, and nothing is created
    /// or removed for them; otherwise everything is made anew. Throws
    /// (StartupError, SystemError, UVError, ResumeError) with whatever it
    /// made removed again; a server that finds another one running changes
    /// nothing at all.
    /// `beforeReady` runs once the loop exists, before the `ready` line:
    /// where the service installs its signal handles, so that nobody who
    /// saw that line can signal the process before it handles signals.
    func start(inheriting: () throws -> Inheritance?, beforeReady: (EventLoop) throws -> Void = { _ in }) throws {
        precondition(lock == nil, "started twice")
        let lock = try InstanceLock.acquire(path: configuration.lockPath)
        self.lock = lock
        var inherited = false
        do {
            let inheritance = try inheriting()
            inherited = inheritance != nil
            try startLocked(inheritance: inheritance, beforeReady: beforeReady)
        } catch {
            // Files taken over from a previous process are not this start's
            // to remove: whoever handed their fds on still holds them.
            close(keepingFiles: inherited)
            throw error
        }
    }

    private func startLocked(inheritance: Inheritance?, beforeReady: (EventLoop) throws -> Void) throws {
        let plan = configuration.layout
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
        self.resources = resources

        let loop = try EventLoop()
        self.loop = loop
        let readiness = try ReadinessSet(loop: loop)
        peers = readiness
        for (base, path, handed, accept) in [
            (StoredName.qemuListener, configuration.qemuSocketPath, inheritance?.qemuListener,
             { [unowned self] (fd: OwnedFD) in self.acceptVM(fd, resources: resources) }),
            (StoredName.clientListener, configuration.clientSocketPath, inheritance?.clientListener,
             { [unowned self] (fd: OwnedFD) in self.acceptClient(fd, resources: resources) }),
        ] {
            let onError = { [unowned self] (error: SystemError) in self.report(.acceptFailed(socket: path, error: "\(error)")) }
            let listener: Listener
            if let handed, try Self.isStillAt(path, handed) {
                listener = try Listener(readiness: readiness, adopting: handed.fd, path: path, mode: configuration.socketMode,
                                        group: configuration.socketGroup, onAccept: accept, onError: onError)
            } else {
                // Not handed back, or its file is gone (a runtime directory
                // made anew) or replaced: a new one, stored in place of the old.
                handed?.fd.close()
                if inheritance != nil, try Listener.removeLeftover(path: path) {
                    report(.leftoverRemoved(path: path, what: "a socket nobody listened on"))
                }
                listener = try Listener(readiness: readiness, path: path, mode: configuration.socketMode, group: configuration.socketGroup,
                                        onAccept: accept, onError: onError)
            }
            listeners.append(ServedListener(listener: listener, baseName: base, handedName: handed?.name))
            created.append(listener.file)
        }
        let stopper = try AsyncHandle(loop: loop) { [unowned self] in
            self.report(.stopping(signal: 0, handingOver: false))
            self.stop()
        }
        stopRequest.withLock { $0 = stopper }
        handshakeTimer = try TimerHandle(loop: loop) { [unowned self] in self.expireHandshakes() }
        heldTimer = try TimerHandle(loop: loop) { [unowned self] in self.expireHeld() }
        // Room for held connections: what the fd limit leaves after the
        // pending ones and 1024 for everything else, at most 16384.
        held = HeldConnections<AcceptedConnection>(capacity: min(16384, max(0, ProcessLimits.raiseOpenFileLimit() - configuration.maximumPending - 1024)))
        beforeWaiting = try PrepareHandle(loop: loop) { [unowned self] in
            self.greetHeld()
            self.onTurn?()
            self.events.flush()
        }
        if let inheritance {
            if let fd = inheritance.vm { resumeVM(fd, resources: resources) }
            report(.resumed(sharedMemoryInode: sharedMemory.inode, eventFDs: 2 * channels.count,
                            listeners: [inheritance.qemuListener, inheritance.clientListener].compactMap { $0 }.count, vm: vm?.peer))
        }
        try beforeReady(loop)
        report(.ready(configuration))
    }

    /// Serves until `stop`: every connection is handled on this thread.
    public func serve() {
        guard let loop else { preconditionFailure("serve before start") }
        loop.run()
    }

    /// Starts, serves until `stop` or `requestStop`, and closes.
    public func run() throws {
        try start()
        defer { close() }
        serve()
    }

    /// Any thread: stops the server as SIGTERM would (`serve` then returns).
    /// Before `start` and after `close` it does nothing.
    public func requestStop() {
        stopRequest.withLock { $0?.wake() }
    }

    /// Closes the listeners, the connections and the handles; the loop
    /// then runs out of work and `serve` returns. Loop thread only.
    public func stop() {
        closeEverything()
    }

    /// After `serve` (or a failed `start`): removes the files `start`
    /// made, unless `keepingFiles` (the service manager keeps the fds for
    /// the next server process of this VM), releases the lock and closes
    /// the loop.
    public func close(keepingFiles: Bool = false) {
        closeEverything()  // if `serve` did not run to its end
        if !keepingFiles { for file in created.reversed() { file.remove() } }
        created = []
        resources = nil
        if let loop {
            loop.close()
            self.loop = nil
        }
        lock?.release()
        lock = nil
        events.flush()
    }

    // MARK: what operators see

    static func clockTime(_ second: Int) -> String {
        let day = second % 86400
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(day / 3600)):\(two(day / 60 % 60)):\(two(day % 60))"
    }

    /// The whole state, a line each: for SIGUSR1 and `ivctl status`.
    func stateLines() -> [String] {
        guard let resources else { return [] }
        let plan = configuration.layout
        var lines = ["layout \(configuration.layoutSource): \(plan.regionCount) regions; shared memory \(configuration.sharedMemoryPath) "
            + "(inode \(resources.sharedMemory.inode), \(resources.sharedMemory.size) bytes)"]
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
        lines.append("\(resources.refused) clients refused after connecting, \(peersRefused) peers refused by the access policy; "
            + "\(shares.total) handshakes pending, \(held.count) connections waiting for room")
        return lines
    }

    private func closeEverything() {
        stopping = true
        listeners.forEach { $0.listener.close() }
        listeners = []
        vm?.closeSilently()
        for client in clients.values { client.close() }
        handshakeTimer?.close()
        handshakeTimer = nil
        heldTimer?.close()
        heldTimer = nil
        while let entry = held.takeOldest() { entry.payload.fd.close() }
        beforeWaiting?.close()
        beforeWaiting = nil
        stopRequest.withLock { handle in
            handle?.close()
            handle = nil
        }
        onStop?()
        onStop = nil
        onTurn = nil
        peers?.close()
        peers = nil
    }

    /// Whether the socket file at `path` is still the one `handed` listens
    /// on, decided from the file alone: nothing ever connects to it, since
    /// that would reach the very listener being taken over. A name without
    /// the file's identity (stored by an earlier version) is taken at its
    /// word when a socket is at the path.
    private static func isStillAt(_ path: String, _ handed: HandedListener) throws(SystemError) -> Bool {
        guard let current = try FileIdentity.at(path) else { return false }
        if let file = handed.file { return file == current }
        return try ExistingPath.isSocket(path)
    }

    /// What outlives this process, by name: the memory, the eventfds, both
    /// listeners (for the service manager's store, and for SIGUSR2's
    /// re-exec with the VM's connection added).
    func handOverList() -> [(name: String, fd: Int32)] {
        guard let resources else { return [] }
        return Inheritance.storedNames(sharedMemory: resources.sharedMemory, channels: resources.channels)
            + listeners.map { ($0.storedName, $0.listener.rawFD) }
    }

    /// The VM's connection, handed back: served on as it is.
    private func resumeVM(_ fd: OwnedFD, resources: ServedResources) {
        guard let peers else { return }
        let peer = try? UnixSocket.peerCredentials(fd)
        makeVMConnection(PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 256), resources: resources, resuming: true).resume()
    }

    @discardableResult
    private func makeVMConnection(_ socket: PeerSocket, resources: ServedResources, resuming: Bool = false) -> VMConnection {
        let connection = VMConnection(socket: socket, resources: resources, resuming: resuming) { [unowned self] closed in
            guard self.vm === closed else { return }
            self.vm = nil
            // The VM left. (When the server stops, its connection stays
            // stored for the next server process of this VM.)
            if !self.stopping && closed.wasAttached { self.onVMDetached?() }
        }
        vm = connection
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
        let connection = makeVMConnection(PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 256), resources: resources)
        connection.start()
        // A peer that hung up before its handshake went out is closed (and
        // logged as gone) already: it never was attached.
        guard vm === connection, !connection.isClosed else { return }
        onVMAttached?(connection)
    }

    private func acceptClient(_ fd: OwnedFD, resources: ServedResources) {
        guard let peer = admit(fd, on: configuration.clientSocketPath) else { return }
        // While the server has room every connection is greeted; when it
        // is full, one over its share waits, and for one within it, the
        // busiest over its share makes room.
        switch shares.admit(pid: peer.pid, uid: peer.uid) {
        case .admit:
            break
        case let .hold(cap):
            noteOverShare(pid: peer.pid, uid: peer.uid, cap: cap, waiting: true)
            hold(fd, peer: peer)
            return
        case let .admitAfterClosing(victim, pid, uid, cap):
            noteOverShare(pid: pid, uid: uid, cap: cap, waiting: false)
            clients[Int32(victim)]?.closeToMakeRoom()
        }
        greet(fd, peer: peer, resources: resources)
    }

    /// A connection becomes a pending handshake: the greeting goes out.
    private func greet(_ fd: OwnedFD, peer: PeerCredentials, resources: ServedResources) {
        guard let peers, let timer = handshakeTimer else { return }
        let socket = PeerSocket(readiness: peers, fd: fd, peer: peer, readSize: 64)
        let connection = ClientConnection(
            socket: socket, resources: resources, deadline: timer.now + configuration.handshakeTimeoutMilliseconds,
            owner: self)
        clients[connection.slot] = connection
        addPending(connection)
        connection.start()
    }

    /// Logs a process the first time it is over its share.
    private func noteOverShare(pid: Int32, uid: UInt32, cap: PendingShares.Cap, waiting: Bool) {
        guard overShare[pid] == nil else { return }
        overShare[pid] = OverShare()
        report(.pendingShareExceeded(pid: pid, uid: uid, cap: cap, waiting: waiting, limits: configuration.pendingLimits))
    }

    /// Logs a process once more when it has nothing pending and nothing
    /// waiting, with what became of its connections meanwhile.
    private func clearOverShareIfIdle(_ pid: Int32) {
        guard let counts = overShare[pid], shares.count(process: pid) == 0, held.count(process: pid) == 0 else { return }
        overShare[pid] = nil
        report(.pendingShareCleared(pid: pid, served: counts.served, held: counts.held, closed: counts.closed))
    }

    // MARK: held connections

    private func hold(_ fd: OwnedFD, peer: PeerCredentials) {
        guard let timer = heldTimer else { return fd.close() }
        if held.isEmpty { timer.arm(milliseconds: configuration.handshakeTimeoutMilliseconds) }
        overShare[peer.pid]?.held += 1
        let entry = HeldConnections<AcceptedConnection>.Entry(payload: AcceptedConnection(fd: fd, peer: peer), pid: peer.pid, deadline: timer.now + configuration.handshakeTimeoutMilliseconds)
        if let dropped = held.append(entry) { closeHeld(dropped) }
    }

    /// Before the loop waits: the oldest waiting connections take whatever
    /// room opened during this turn (a newcomer that made room took its own).
    private func greetHeld() {
        guard !held.isEmpty, let resources else { return }
        held.greetInTurn(while: { shares.hasRoom }) { entry in
            greet(entry.payload.fd, peer: entry.payload.peer, resources: resources)
        }
        if held.isEmpty { heldTimer?.disarm() }
    }

    /// The oldest waiting connections whose time is up, with still no room.
    private func expireHeld() {
        guard let timer = heldTimer else { return }
        let now = timer.now
        held.expire(now: now) { closeHeld($0) }
        if let oldest = held.oldest { timer.arm(milliseconds: oldest.deadline - now) }
    }

    private func closeHeld(_ entry: HeldConnections<AcceptedConnection>.Entry) {
        entry.payload.fd.close()
        overShare[entry.pid]?.closed += 1
        clearOverShareIfIdle(entry.pid)
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
        if overShare[pid] != nil {
            if connection.state == .replying { overShare[pid]!.served += 1 } else { overShare[pid]!.closed += 1 }
            clearOverShareIfIdle(pid)
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

/// A connection accepted and admitted by the access policy, not yet greeted.
struct AcceptedConnection {
    let fd: OwnedFD
    let peer: PeerCredentials
}

/// What became of an over-share process's connections since it went over.
struct OverShare {
    var served = 0
    var held = 0
    var closed = 0
}

// Everything runs on the loop's thread, which is the thread that calls
// `run`; `requestStop` alone may come from any other (it only wakes the loop
// through uv_async, under a lock).
extension Server: @unchecked Sendable {}

extension Server: ClientConnectionOwner {
    func answer(_ query: ClientHandshake.Query) -> [UInt8] {
        switch query {
        case .status: return Array((stateLines().joined(separator: "\n") + "\n").utf8)
        case .vmInfo: return Array(HALDProtocol.VMInfo.text(vm?.info).utf8)
        }
    }

    func clientLeftPending(_ client: ClientConnection) {
        guard removePending(client), events.isEnabled(.debug), let timer = handshakeTimer else { return }
        let took = timer.now + configuration.handshakeTimeoutMilliseconds - client.deadline
        report(.detail("client pid \(client.peerPID): handshake decided after \(took) ms"))
    }
    func logsRefusal(of client: ClientConnection) -> Bool {
        overShare[client.peerPID] == nil
    }

    func clientClosed(_ client: ClientConnection) {
        if clients[client.slot] === client { clients[client.slot] = nil }
    }
}
