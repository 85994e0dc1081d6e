import LinuxSystem

/// The modes both servers give their files unless told otherwise.
public enum AccessDefaults {
    /// The socket files: the server's user and group.
    public static let socketMode: UInt32 = 0o660
    /// The memory: QEMU and clients get it as an fd, so they need no access to the path.
    public static let sharedMemoryMode: UInt32 = 0o600
}

/// Who may use the sockets, checked with SO_PEERCRED on every connection
/// (the socket file's mode is the first fence, this is the second). By
/// default only root and the server's own user; `--allow-uid` and
/// `--allow-gid` widen it.
public struct AccessPolicy: Equatable, Sendable {
    public var serverUID: UInt32
    public var allowedUIDs: Set<UInt32>
    public var allowedGIDs: Set<UInt32>

    public init(serverUID: UInt32, allowedUIDs: Set<UInt32> = [], allowedGIDs: Set<UInt32> = []) {
        self.serverUID = serverUID
        self.allowedUIDs = allowedUIDs
        self.allowedGIDs = allowedGIDs
    }

    /// Whether a peer is served. `supplementaryGroups` is asked for only
    /// when the answer depends on it (it costs a system call).
    public func allows(_ peer: PeerCredentials, supplementaryGroups: () -> [UInt32]) -> Bool {
        if peer.uid == 0 || peer.uid == serverUID || allowedUIDs.contains(peer.uid) { return true }
        guard !allowedGIDs.isEmpty else { return false }
        return allowedGIDs.contains(peer.gid) || supplementaryGroups().contains { allowedGIDs.contains($0) }
    }
}

extension AccessPolicy {
    /// SO_PEERCRED on an accepted connection, and whether it may stay. A
    /// peer whose credentials cannot be read is not allowed.
    package func check(_ fd: OwnedFD) -> (peer: PeerCredentials?, allowed: Bool) {
        guard let peer = try? UnixSocket.peerCredentials(fd) else { return (nil, false) }
        return (peer, allows(peer, supplementaryGroups: { UnixSocket.peerGroups(fd) }))
    }
}
