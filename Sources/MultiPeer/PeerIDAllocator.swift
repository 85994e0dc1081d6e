import WireFormat

/// Peer IDs as QEMU's contrib server hands them out: a 16-bit counter that
/// moves on after each ID it gives and skips IDs in use, so an ID freed a
/// moment ago is not given again until the counter has gone round (a peer
/// that still holds a leaving peer's eventfds cannot mistake a newcomer
/// for it). Nil when all 65,536 are in use. Pure.
public struct PeerIDAllocator: Sendable {
    private var next: PeerProtocol.PeerID = 0
    private var used: Set<PeerProtocol.PeerID> = []
    /// How many IDs there are: all 65,536, or (in tests, to meet a reused
    /// ID quickly) the first `count` of them.
    private let space: Int

    public init() {
        self.init(count: 1 << 16)
    }

    package init(count: Int) {
        precondition((1...(1 << 16)).contains(count))
        space = count
    }

    public var count: Int { used.count }

    public mutating func allocate() -> PeerProtocol.PeerID? {
        guard used.count < space else { return nil }
        while used.contains(next) { advance() }
        let id = next
        advance()
        used.insert(id)
        return id
    }

    private mutating func advance() {
        next = Int(next) + 1 < space ? next + 1 : 0
    }

    public mutating func release(_ id: PeerProtocol.PeerID) {
        used.remove(id)
    }
}
