import Glibc
import LinuxSystem
import WireFormat

/// Everything that can go wrong for a host client. Each error names the
/// socket, the region when there is one, and the system's text for errno.
public struct IVClientError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Equatable, Sendable {
        /// Nothing exists at the socket path.
        case socketMissing
        /// Something exists at the path but nobody listens (a dead server).
        case serverNotListening
        /// The server closed the handshake without fds: it does not serve
        /// that region to this client (unknown name, or not allowed).
        case refused
        /// The server serves a layout without this region.
        case unknownRegion(available: [String])
        case unsupportedProtocol(serverVersion: UInt32)
        /// A multi-peer server that speaks another protocol version.
        case unsupportedPeerProtocol(serverVersion: Int64)
        /// No peer with this ID is connected (`known`: those that are).
        case unknownPeer(UInt16, known: [UInt16])
        /// The server closed the connection.
        case disconnected
        /// The server broke the handshake (wrong fds or payload).
        case protocolViolation(String)
        /// The shared memory's header is unusable.
        case badLayout(HeaderError)
        /// A caller's argument that cannot work (offset outside the region,
        /// misaligned word, name too long).
        case invalidArgument(String)
        /// Every slot of the outgoing signal table holds another offset.
        case signalTableFull(offset: UInt32)
        /// The server did not answer within the handshake timeout.
        case timedOut
        /// The socket speaks QEMU's ivshmem protocol, not the host clients'
        /// handshake: ivserver's --qemu-sock, or a multi-peer server's.
        case notAClientSocket
        /// The shared memory's filesystem (a tmpfs) has no page left for
        /// bytes `offset..<offset+count` (`errno`: ENOSPC, or ENOMEM): what
        /// touching them would have been a SIGBUS for.
        case sharedMemoryFull(offset: Int, count: Int, errno: Int32)
        /// A system call failed: which, what for, and errno (`SystemError`).
        case system(SystemError)
    }

    public var kind: Kind
    public var socketPath: String
    public var region: String?

    public init(_ kind: Kind, socketPath: String, region: String?) {
        self.kind = kind
        self.socketPath = socketPath
        self.region = region
    }

    public var description: String {
        // ivserver's requests (#ivserver.status, …) name no region.
        let subject = region.flatMap { $0.hasPrefix("#ivserver.") ? nil : "region '\($0)' at \(socketPath)" } ?? socketPath
        switch kind {
        case .socketMissing where region == nil:
            return "\(socketPath): no such socket; is the multi-peer server running, and is this its socket (-S)?"
        case .socketMissing:
            return "\(socketPath): no such socket; is ivserver running, and is this its --client-sock?"
        case .serverNotListening:
            return "\(socketPath): nobody is listening (connection refused); ivserver is not running there"
        case .refused where region == nil:
            return "\(socketPath): the server refused this peer (it is full: --max-peers, or it does not allow this user)"
        case .refused:
            return "\(subject): the server refused the handshake (it does not know that region, or does not allow this user)"
        case let .unsupportedPeerProtocol(version):
            return "\(socketPath): the server speaks ivshmem protocol version \(version); this client speaks 0 (is this a multi-peer ivshmem server's socket?)"
        case let .unknownPeer(peer, known):
            return "\(socketPath): no peer \(peer) is connected; the peers are: \(known.map(String.init).joined(separator: ", "))"
        case .disconnected:
            return "\(socketPath): the server closed the connection"
        case let .unknownRegion(available):
            return "\(subject): no such region; the layout has: \(available.joined(separator: ", "))"
        case let .unsupportedProtocol(version):
            return "\(subject): the server speaks HALD protocol version \(version); this client speaks \(HALDProtocol.version)"
        case let .protocolViolation(what):
            return "\(subject): the server broke the handshake: \(what)"
        case let .badLayout(error):
            return "\(subject): the shared memory's layout is unusable: \(error)"
        case let .invalidArgument(what):
            return "\(subject): \(what)"
        case let .signalTableFull(offset):
            return "\(subject): the host_to_guest signal table is full; offset \(offset) was not queued (the guest has been interrupted to drain it; retry)"
        case .timedOut:
            return "\(subject): the server did not answer in time"
        case .notAClientSocket:
            return "\(socketPath): this is not a host-client socket: it speaks QEMU's ivshmem protocol, as ivserver's --qemu-sock "
                + "or a multi-peer server's socket does; give ivserver's --client-sock (for a multi-peer server, use ivctl peer … -S)"
        case let .sharedMemoryFull(offset, count, code):
            return "\(subject): the shared memory's filesystem is full (\(String(cString: strerror(code)))): it has no pages left for bytes "
                + "\(offset)..<\(offset + count), and touching them would kill this process with SIGBUS; nothing was written. "
                + "Free room there (a larger tmpfs), or have the server started with --prealloc"
        case let .system(error):
            return "\(subject): \(error.operation)\(error.subject.map { " \($0)" } ?? "") failed: \(error.errnoText) (errno \(error.errno))"
        }
    }
}

extension IVClientError {
    /// A failed system call, about this socket and region; `what` names the
    /// step when the call's own name says too little.
    init(_ error: SystemError, _ what: String? = nil, socketPath: String, region: String?) {
        self.init(.system(what.map { SystemError(error.call, $0, errno: error.errno) } ?? error), socketPath: socketPath, region: region)
    }
}

extension IVClientError.Kind {
    var isInvalidArgument: Bool {
        if case .invalidArgument = self { return true }
        return false
    }

    var isSignalTableFull: Bool {
        if case .signalTableFull = self { return true }
        return false
    }
}
