import ServerCore
import WireFormat
import EventLoop
import Glibc
import LinuxSystem

/// One peer's eventfds: ringing vector v's interrupts the peer on vector v.
/// A class, so that announcements still queued for slow peers keep them
/// open after the peer has left (see `OutgoingMessages.retained`).
final class PeerVectors {
    let fds: [OwnedFD]

    init(count: Int) throws(SystemError) {
        fds = try (0..<count).map { _ throws(SystemError) in try EventFD.create() }
    }
}

/// A peer on the multi-peer socket, from accept to close. Its lifecycle:
///
///     greeting ──(everything sent)──> joined ──> closed
///         └───────────(hung up, failed)────────────┘
///
/// Others learn of a peer only once it is joined, so a peer that leaves
/// mid-greeting is announced to nobody.
final class PeerConnection: PeerSocketDelegate {
    enum State: Equatable {
        case greeting
        case joined
        case closed
    }

    let id: PeerProtocol.PeerID
    let vectors: PeerVectors
    /// The device's `vectors=` when its command line says it is fewer than
    /// the server's: it is sent only that many of each peer's eventfds.
    let kept: Int?
    private(set) var state = State.greeting
    private let socket: PeerSocket
    /// Held strongly and told through its own methods (`peerJoined`,
    /// `peerLeft`), as every connection tells its owner; the server drops
    /// the connection when it closes.
    private let owner: PeerServer

    init(id: PeerProtocol.PeerID, socket: PeerSocket, vectors: PeerVectors, kept: Int?, owner: PeerServer) {
        self.id = id
        self.socket = socket
        self.vectors = vectors
        self.kept = kept
        self.owner = owner
        socket.delegate = self
    }

    var peer: PeerCredentials? { socket.peer }
    var unsentMessages: Int { socket.unsentMessages }

    /// Sends the greeting; the peer joins when all of it is out.
    func start(greeting: OutgoingMessages) {
        precondition(state == .greeting)
        socket.send(greeting)
    }

    /// Queues an announcement (a join or a departure) behind whatever the
    /// peer has not been sent yet.
    func send(_ messages: OutgoingMessages) {
        guard state != .closed else { return }
        socket.send(messages)
    }

    func close(reason: String) {
        guard state != .closed else { return }
        let wasJoined = state == .joined
        state = .closed
        socket.close()
        owner.peerLeft(self, wasJoined: wasJoined, reason: reason)
    }

    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event) {
        switch event {
        case .received, .unexpectedFDs:
            break  // peers send nothing in this protocol; stray bytes and fds are dropped
        case .flushed:
            if state == .greeting {
                state = .joined
                owner.peerJoined(self)
            }
        case .endOfStream:
            close(reason: "it closed the connection")
        case let .failed(error) where error.errno == ECONNRESET:
            close(reason: "it closed the connection (with messages unread)")
        case let .failed(error):
            close(reason: "connection failed: \(error)")
        }
    }
}
