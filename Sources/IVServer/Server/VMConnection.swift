import ServerCore
import EventLoop
import LinuxSystem
import WireFormat

/// The VM's QEMU on the QEMU socket (docs/protocols.md §1). The whole
/// handshake goes out at accept; the connection then stays open until QEMU
/// closes it. Its lifecycle:
///
///     handshaking ──(handshake queued)──> attached ──(QEMU left, stop)──> closed
///          └──────────(the peer was gone before it)─────────────────────────┘
///
/// A connection handed over by a previous server process of this VM starts
/// attached.
final class VMConnection: PeerSocketDelegate {
    enum State: Equatable {
        case handshaking
        case attached
        case closed
    }

    private(set) var state: State
    private let socket: PeerSocket
    private let resources: ServedResources
    /// Held strongly and told through its own methods, as every
    /// connection tells its owner; the owner drops it on close.
    private let owner: VSoCServer

    /// A new connection (`start` sends the handshake), or with `handedOver`
    /// one a previous server process of this VM served (`takeOver`).
    init(socket: PeerSocket, resources: ServedResources, handedOver: Bool = false, owner: VSoCServer) {
        self.socket = socket
        self.resources = resources
        self.owner = owner
        state = handedOver ? .attached : .handshaking
        wasAttached = handedOver
        socket.delegate = self
    }

    /// The only way the state changes; anything but the arrows above is a bug.
    private func transition(to next: State) {
        switch (state, next) {
        case (.handshaking, .attached), (.handshaking, .closed), (.attached, .closed): break
        default: preconditionFailure("VM connection: \(state) -> \(next)")
        }
        state = next
        if next == .attached { wasAttached = true }
    }

    /// Whether it ever was the attached VM (a peer gone before its
    /// handshake never was).
    private(set) var wasAttached: Bool

    var peer: PeerCredentials? { socket.peer }

    /// QEMU blocks in device realize until it has the shared memory, so
    /// everything is sent at once, without waiting for QEMU to speak; the
    /// log lines come after, off QEMU's path. A peer that is gone before
    /// the handshake could go out (a probe that connected and closed) is
    /// closed here and never attached.
    func start() {
        precondition(state == .handshaking, "VM connection started twice")
        let regionCount = resources.plan.regionCount
        let vectors = socket.peer.flatMap { resources.doorbellVectors.vectors(ofProcess: $0.pid) }
        // A new VM starts clean, before it holds a single fd.
        let reset: Result<[SignallingReset.Found], SystemError> = Result { () throws(SystemError) in try resources.resetSignalling() }
        socket.send(resources.qemuHandshake(vectorCount: vectors))
        guard state == .handshaking else { return }
        transition(to: .attached)
        switch reset {
        case let .success(found):
            resources.report(.vmConnected(peer: socket.peer, reset: found))
        case let .failure(error):
            resources.report(.vmConnected(peer: socket.peer, reset: nil))
            resources.report(.signallingResetFailed(peer: socket.peer, error: "\(error)"))
        }
        if resources.trace {
            let messages = QemuHandshake.messages(regionCount: regionCount, vectorCount: vectors)
            resources.report(.bytes(peer: socket.peer, direction: "sent to VM", bytes: messages.flatMap(\.payload)))
        }
        if resources.debug {
            let sent = min(vectors ?? regionCount, regionCount)
            resources.report(.detail("VM \(socket.peer.map(\.description) ?? "unknown peer"): sent version 0, id 1024, "
                + "the shared memory (fd \(resources.sharedMemory.fd.rawValue)), \(sent)× peer 0 with a guest_to_host eventfd, "
                + "\(sent)× id 1024 with a host_to_guest eventfd"))
        }
        if let vectors, vectors != regionCount {
            let dead = vectors < regionCount ? resources.plan.regions[vectors...].map(\.name) : []
            resources.report(.vmVectorMismatch(peer: socket.peer, vectors: vectors, regions: regionCount, deadRegions: dead))
        }
    }

    /// Goes on with a VM whose handshake a previous server process of
    /// this VM sent: nothing is sent, QEMU sees no change. Its input is
    /// watched from now on, so a VM that leaves is seen at once.
    func takeOver() {
        precondition(state == .attached, "only a handed-over connection is taken over")
        resources.report(.vmTakenOver(peer: socket.peer))
        socket.watchInput()
    }

    /// Runs `body` with the connection's fd (for the service manager's
    /// store, or a re-exec) while it is open; nil once it is closed.
    func withDescriptor<Result>(_ body: (Int32) throws -> Result) rethrows -> Result? {
        try socket.fd.withDescriptor(body)
    }

    var isClosed: Bool { state == .closed }

    /// When it attached (seconds since the epoch); for a connection taken
    /// over across a restart, when it was taken over.
    let attachedSince = SystemTime.currentSecond()

    /// Who the VM is: its process and that process's start (read from
    /// /proc once, when first asked), and when it attached.
    private(set) lazy var info: HALDProtocol.VMInfo? = socket.peer.flatMap { peer in
        ProcFS.startTime(of: peer.pid).map {
            HALDProtocol.VMInfo(pid: peer.pid, startTicks: $0.ticks, started: $0.epochSecond, attached: attachedSince)
        }
    }

    /// True unless QEMU has hung up (checked without blocking), so a VM that
    /// closed a moment ago does not block its successor.
    var isAlive: Bool {
        state != .closed && !UnixSocket.peerHasHungUp(socket.fd)
    }

    func close(reason: String) {
        guard state != .closed else { return }
        let wasAttached = state == .attached
        transition(to: .closed)
        socket.close()
        if wasAttached {
            resources.report(.vmDisconnected(peer: socket.peer, reason: reason))
        } else {
            resources.report(.vmLeftBeforeHandshake(peer: socket.peer, reason: reason))
        }
        owner.vmClosed(self)
    }

    /// Closes without a disconnect report (server shutdown).
    func closeSilently() {
        guard state != .closed else { return }
        transition(to: .closed)
        socket.close()
        owner.vmClosed(self)
    }

    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event) {
        switch event {
        case .received, .unexpectedFDs, .flushed:
            break  // QEMU sends nothing in protocol 0; stray bytes and fds are dropped
        case .endOfStream:
            close(reason: "QEMU closed the connection")
        case let .failed(error):
            close(reason: "connection failed: \(error)")
        }
    }
}
