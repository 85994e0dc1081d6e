import LinuxSystem
import Glibc
import WireFormat

/// The three fds the server grants for a region.
struct GrantedRegion {
    var guestToHost: OwnedFD
    var hostToGuest: OwnedFD
    var sharedMemory: OwnedFD
}

/// The client's half of the HALD handshake (docs/protocols.md §2), blocking
/// with a timeout on every step: a client tool may block, but never forever.
struct HandshakeClient {
    let socketPath: String
    let region: String
    let timeout: Duration

    func error(_ kind: IVClientError.Kind) -> IVClientError {
        IVClientError(kind, socketPath: socketPath, region: region)
    }

    func run() throws(IVClientError) -> GrantedRegion {
        let socket = try request()
        let grant = try receive(socket, count: HALDProtocol.grantPayload.count + 1)
        if grant.bytes.isEmpty && grant.fds.isEmpty { throw error(.refused) }
        guard grant.fds.count == HALDProtocol.grantedFDCount else {
            throw error(.protocolViolation("\(grant.fds.count) fds instead of \(HALDProtocol.grantedFDCount)"))
        }
        guard grant.bytes == HALDProtocol.grantPayload else {
            throw error(.protocolViolation("a reply of \(grant.bytes.count) bytes instead of the 8-byte grant"))
        }
        for eventFD in grant.fds[0...1] {
            do {
                try Posix.setNonBlocking(eventFD)
            } catch {
                throw IVClientError(error, "fcntl(O_NONBLOCK) on an eventfd", socketPath: socketPath, region: region)
            }
        }
        return GrantedRegion(guestToHost: grant.fds[0], hostToGuest: grant.fds[1], sharedMemory: grant.fds[2])
    }

    /// Steps 1 and 2: connect, check the greeting, send the name.
    private func request() throws(IVClientError) -> ClientSocket {
        guard let request = HALDProtocol.request(region: region) else {
            throw error(.invalidArgument("a region name is 1 to \(HALDProtocol.nameLengths.upperBound) bytes"))
        }
        let socket = try connect()
        let greeting = try receive(socket, count: 4)
        guard greeting.bytes.count == 4 else {
            throw error(greeting.bytes.isEmpty ? .refused : .protocolViolation("the greeting was cut short"))
        }
        let version = UInt32(littleEndianBytes: greeting.bytes)!
        guard HALDProtocol.isSupported(serverVersion: version) else { throw error(.unsupportedProtocol(serverVersion: version)) }
        // A HALD server says nothing more until it has the name; QEMU's
        // ivshmem protocol (ivserver's --qemu-sock, a multi-peer server)
        // sends its 8-byte version and the rest at once, unasked.
        if try socket.hasWaitingBytes() { throw error(.notAClientSocket) }
        try socket.send(request)
        return socket
    }

    /// One of ivserver's requests (`region` is `HALDProtocol.statusRequestName`
    /// or `vmInfoRequestName`): the text the server sends before it closes.
    /// A server that closes without a word does not know the request, or
    /// does not serve us.
    func query() throws(IVClientError) -> String {
        String(decoding: try queryBytes(), as: UTF8.self)
    }

    /// The same, as the bytes that came.
    func queryBytes() throws(IVClientError) -> [UInt8] {
        let socket = try request()
        let reply = try receive(socket, count: 1 << 20)
        guard reply.fds.isEmpty else { throw error(.protocolViolation("fds came with the answer")) }
        guard !reply.bytes.isEmpty else { throw error(.refused) }
        return reply.bytes
    }

    private func connect() throws(IVClientError) -> ClientSocket {
        try ClientSocket.connect(path: socketPath, timeout: timeout, fail: error)
    }

    private func receive(_ socket: ClientSocket, count: Int) throws(IVClientError) -> (bytes: [UInt8], fds: [OwnedFD]) {
        try socket.receive(count: count, maximumFDs: HALDProtocol.grantedFDCount,
                           tooManyFDs: "more fds than the \(HALDProtocol.grantedFDCount) of a grant")
    }
}
