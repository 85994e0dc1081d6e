import LinuxSystem
import WireFormat

/// The access policy at accept, for either server: the peer's credentials
/// when it may stay; otherwise it is logged, counted, refused and closed.
public final class Gate {
    private let policy: AccessPolicy
    private let events: EventSink
    /// Peers refused by the access policy so far.
    public private(set) var refused = 0

    public init(policy: AccessPolicy, events: EventSink) {
        self.policy = policy
        self.events = events
    }

    /// SO_PEERCRED and the policy; a peer whose credentials cannot be read
    /// is refused. `refuse` sends the protocol's refusal (QEMU sockets)
    /// rather than only closing (the client socket).
    public func admit(_ fd: OwnedFD, on socket: String, refusing: Bool) -> PeerCredentials? {
        let (peer, allowed) = policy.check(fd)
        if let peer, allowed { return peer }
        refused += 1
        events.record(CoreEvent.peerRefused(socket: socket, peer: peer))
        if refusing { Gate.refuse(fd) } else { fd.close() }
        return nil
    }

    /// Turns a peer away on an ivshmem socket (either server's): it is
    /// sent protocol version -1, so that QEMU fails at once ("server sent
    /// version -1, expecting 0") instead of waiting on, or spinning after,
    /// a close.
    public static func refuse(_ fd: OwnedFD) {
        // 8 bytes into a fresh socket's empty buffer cannot block; if the
        // peer is already gone there is nothing to tell it.
        _ = try? UnixSocket.send(fd, PeerProtocol.Message(value: PeerProtocol.refusalVersion).payload[...])
        fd.close()
    }
}
