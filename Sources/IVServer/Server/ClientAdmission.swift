import EventLoop
import LinuxSystem
import ServerCore
import WireFormat

/// The host clients on the client socket, from accept to close: who is
/// greeted, who waits for room and who makes room (ServerCore's
/// PendingShares and HeldConnections), the handshake deadlines, and every
/// open connection (so that a stop closes them all). Loop thread only.
final class ClientAdmission {
    private let configuration: VSoCServerConfiguration
    private let resources: ServedResources
    private let readiness: ReadinessSet
    private let events: EventSink
    private let answers: (ClientHandshake.Query) -> [UInt8]

    /// Undecided clients, oldest (earliest deadline) first.
    private let pending = ClientList()
    /// Decided clients whose reply is going out.
    private let replying = ClientList()
    /// Who holds the pending handshakes (counted by process and user).
    private var shares: PendingShares<ClientConnection>
    /// Processes over their share while the server was full, with what
    /// became of their connections since; each is logged once when it
    /// goes over and once when it has nothing pending or waiting again.
    private var overShare: [Int32: OverShare] = [:]
    /// Connections waiting for room (the server was full and their process
    /// or user over its share): greeted in turn as room opens, closed only
    /// when they have waited out the handshake timeout without room.
    /// Waiting rather than closed: a process that reconnects whatever is
    /// closed would otherwise keep the server (and a core) busy.
    private let held: HeldConnections<AcceptedConnection>
    // Made once self exists (their callbacks hold it).
    private var handshakeTimer: TimerHandle!
    private var heldTimer: TimerHandle!

    init(configuration: VSoCServerConfiguration, resources: ServedResources, serving: ServingLoop, events: EventSink,
         answers: @escaping (ClientHandshake.Query) -> [UInt8]) throws {
        self.configuration = configuration
        self.resources = resources
        readiness = serving.readiness
        self.events = events
        self.answers = answers
        shares = PendingShares(limits: configuration.pendingLimits)
        // Room for waiting connections: what the fd limit leaves after the
        // pending ones and 1024 for everything else, at most 16384.
        let room = OpenFiles.capacity(reserving: configuration.maximumPending + 1024, perConnection: 1).connections
        held = HeldConnections(capacity: min(16384, room))
        handshakeTimer = try TimerHandle(loop: serving.loop) { [unowned self] in self.expireHandshakes() }
        heldTimer = try TimerHandle(loop: serving.loop) { [unowned self] in self.expireHeld() }
        serving.attach(handshakeTimer)
        serving.attach(heldTimer)
        // The oldest waiting connections take whatever room opened during
        // a turn, before the loop waits (a newcomer that made room took its own).
        serving.onEachTurn { [unowned self] in self.greetHeld() }
    }

    private func report(_ event: CoreEvent) { events.record(event) }

    /// Handshakes pending, and connections waiting for room.
    var pendingCount: Int { shares.total }
    var waitingCount: Int { held.count }

    // MARK: accepting

    /// A connection the access policy admitted.
    func accept(_ fd: OwnedFD, peer: PeerCredentials) {
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
            victim.closeToMakeRoom()
        }
        greet(fd, peer: peer)
    }

    /// A connection becomes a pending handshake: the greeting goes out.
    private func greet(_ fd: OwnedFD, peer: PeerCredentials) {
        let socket = PeerSocket(readiness: readiness, fd: fd, peer: peer, readSize: 64)
        let connection = ClientConnection(socket: socket, resources: resources,
                                          deadline: handshakeTimer.now + configuration.handshakeTimeoutMilliseconds, owner: self)
        pending.append(connection)
        shares.add(connection, pid: peer.pid, uid: peer.uid)
        if shares.total == 1 {
            handshakeTimer.arm(milliseconds: configuration.handshakeTimeoutMilliseconds)
            if resources.debug { report(.detail("handshake timer armed for \(configuration.handshakeTimeoutMilliseconds) ms")) }
        }
        connection.start()
    }

    /// Closes every connection and every waiting one (the server stops).
    func closeAll() {
        pending.closeAll()
        replying.closeAll()
        while let entry = held.takeOldest() { entry.payload.fd.close() }
    }

    // MARK: over-share processes

    /// Logs a process the first time it is over its share.
    private func noteOverShare(pid: Int32, uid: UInt32, cap: PendingCap, waiting: Bool) {
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

    // MARK: waiting connections

    private func hold(_ fd: OwnedFD, peer: PeerCredentials) {
        if held.isEmpty { heldTimer.arm(milliseconds: configuration.handshakeTimeoutMilliseconds) }
        overShare[peer.pid]?.held += 1
        let entry = HeldConnections<AcceptedConnection>.Entry(
            payload: AcceptedConnection(fd: fd, peer: peer), pid: peer.pid, deadline: heldTimer.now + configuration.handshakeTimeoutMilliseconds)
        if let dropped = held.append(entry) { closeHeld(dropped) }
    }

    private func greetHeld() {
        guard !held.isEmpty else { return }
        held.greetInTurn(while: { shares.hasRoomForWaiting }) { entry in greet(entry.payload.fd, peer: entry.payload.peer) }
        if held.isEmpty { heldTimer.disarm() }
    }

    /// The oldest waiting connections whose time is up, with still no room.
    private func expireHeld() {
        let now = heldTimer.now
        held.expire(now: now) { closeHeld($0) }
        if let oldest = held.oldest { heldTimer.arm(milliseconds: oldest.deadline - now) }
    }

    private func closeHeld(_ entry: HeldConnections<AcceptedConnection>.Entry) {
        entry.payload.fd.close()
        overShare[entry.pid]?.closed += 1
        clearOverShareIfIdle(entry.pid)
    }

    // MARK: handshake deadlines
    //
    // Every client gets the same timeout, so greeting order is deadline
    // order: the pending list and one timer armed for its head cover any
    // number of pending clients. The timer is armed only while the list is
    // non-empty, so an idle server has nothing to wake it.

    private func expireHandshakes() {
        let now = handshakeTimer.now
        while let oldest = pending.oldest, oldest.deadline <= now {
            oldest.timeOut(after: configuration.handshakeTimeoutMilliseconds)
            // Its close took it out of the list (else this would never end).
            precondition(pending.oldest !== oldest, "a timed-out client stayed pending")
        }
        if let oldest = pending.oldest { handshakeTimer.arm(milliseconds: oldest.deadline - now) }
    }
}

/// What its clients tell it.
extension ClientAdmission {
    func client(_ client: ClientConnection, left state: ClientConnection.State) {
        switch state {
        case .pending:
            pending.remove(client)
            leftPending(client)
            if client.state == .replying { replying.append(client) }
        case .replying:
            replying.remove(client)
        case .closed:
            preconditionFailure("a closed client changed state")
        }
    }

    private func leftPending(_ client: ClientConnection) {
        let pid = client.peerPID
        shares.remove(client, pid: pid)
        if shares.total == 0 { handshakeTimer.disarm() }
        if overShare[pid] != nil {
            if client.state == .replying { overShare[pid]!.served += 1 } else { overShare[pid]!.closed += 1 }
            clearOverShareIfIdle(pid)
        }
        if resources.debug {
            let took = handshakeTimer.now + configuration.handshakeTimeoutMilliseconds - client.deadline
            report(.detail("client pid \(pid): handshake decided after \(took) ms"))
        }
    }

    func answer(_ query: ClientHandshake.Query) -> [UInt8] {
        answers(query)
    }

    func logsRefusal(of client: ClientConnection) -> Bool {
        overShare[client.peerPID] == nil
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
