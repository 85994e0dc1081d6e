import Descriptors
import CLibUV
import Glibc
import VSoCFormat

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

    func system(_ operation: String, _ code: Int32) -> IVClientError {
        error(.system(operation: operation, errno: code))
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
            let code = Syscall.makeNonBlocking(eventFD.rawValue)
            if code != 0 { throw system("fcntl(O_NONBLOCK) on an eventfd", code) }
        }
        return GrantedRegion(guestToHost: grant.fds[0], hostToGuest: grant.fds[1], sharedMemory: grant.fds[2])
    }

    /// Steps 1 and 2: connect, check the greeting, send the name.
    private func request() throws(IVClientError) -> OwnedFD {
        guard let request = HALDProtocol.request(region: region) else {
            throw error(.invalidArgument("a region name is 1 to \(HALDProtocol.nameLengths.upperBound) bytes"))
        }
        let socket = try connect()
        let greeting = try receive(socket, count: 4)
        guard greeting.bytes.count == 4 else {
            throw error(greeting.bytes.isEmpty ? .refused : .protocolViolation("the greeting was cut short"))
        }
        let version = UInt32(greeting.bytes[0]) | UInt32(greeting.bytes[1]) << 8
            | UInt32(greeting.bytes[2]) << 16 | UInt32(greeting.bytes[3]) << 24
        guard HALDProtocol.isSupported(serverVersion: version) else { throw error(.unsupportedProtocol(serverVersion: version)) }
        try send(socket, request)
        return socket
    }

    /// ivserver's status request (`region` is `HALDProtocol.statusRequestName`):
    /// the text the server sends before it closes. A server that closes
    /// without a word does not know the request, or does not serve us.
    func status() throws(IVClientError) -> String {
        let socket = try request()
        let reply = try receive(socket, count: 1 << 20)
        guard reply.fds.isEmpty else { throw error(.protocolViolation("fds came with the status")) }
        guard !reply.bytes.isEmpty else { throw error(.refused) }
        return String(decoding: reply.bytes, as: UTF8.self)
    }

    private func connect() throws(IVClientError) -> OwnedFD {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < ivs_sun_path_capacity() else {
            throw error(.invalidArgument("the socket path is \(path.count) bytes; a UNIX socket path has at most \(ivs_sun_path_capacity() - 1)"))
        }
        withUnsafeMutableBytes(of: &address.sun_path) { field in
            field.copyBytes(from: path)
            field[path.count] = 0
        }
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw system("socket", errno) }
        let socket = OwnedFD(taking: raw)
        var limit = timeval(tv_sec: Int(timeout.components.seconds),
                            tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        if limit.tv_sec == 0 && limit.tv_usec == 0 { limit.tv_usec = 1 }  // zero would mean "no timeout"
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            guard setsockopt(raw, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw system("setsockopt", errno)
            }
        }
        let (_, code) = Syscall.retrying {
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Int(Glibc.connect(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)))
                }
            }
        }
        switch code {
        case 0: return socket
        case ENOENT: throw error(.socketMissing)
        case ECONNREFUSED: throw error(.serverNotListening)
        case EAGAIN, ETIMEDOUT: throw error(.timedOut)
        default: throw system("connect", code)
        }
    }

    private func send(_ socket: OwnedFD, _ bytes: [UInt8]) throws(IVClientError) {
        var sent = 0
        while sent < bytes.count {
            let (result, code) = Syscall.retrying {
                bytes[sent...].withUnsafeBytes { Glibc.send(socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            switch code {
            case 0: sent += result
            case EPIPE, ECONNRESET: throw error(.refused)
            case EAGAIN: throw error(.timedOut)
            default: throw system("send", code)
            }
        }
    }

    /// Reads until `count` bytes or the end of the stream, keeping every fd
    /// that arrives (so none leaks when the reply is then rejected).
    private func receive(_ socket: OwnedFD, count: Int) throws(IVClientError) -> (bytes: [UInt8], fds: [OwnedFD]) {
        var bytes: [UInt8] = []
        var fds: [OwnedFD] = []
        let maximumFDs = HALDProtocol.grantedFDCount + 1  // room for one too many, to notice it
        let controlSize = ivs_cmsg_space(MemoryLayout<Int32>.size * maximumFDs)
        var buffer = [UInt8](repeating: 0, count: count)
        var control = [UInt8](repeating: 0, count: controlSize)
        while bytes.count < count {
            var truncated = false
            let (result, code) = buffer.withUnsafeMutableBytes { data in
                control.withUnsafeMutableBytes { controlBytes in
                    var vector = iovec(iov_base: data.baseAddress! + bytes.count, iov_len: count - bytes.count)
                    return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var message = msghdr()
                        message.msg_iov = vectorPointer
                        message.msg_iovlen = 1
                        message.msg_control = controlBytes.baseAddress
                        message.msg_controllen = controlBytes.count
                        let outcome = Syscall.retrying { recvmsg(socket.rawValue, &message, Int32(MSG_CMSG_CLOEXEC)) }
                        if outcome.result >= 0 {
                            fds += Self.receivedFDs(&message)
                            truncated = message.msg_flags & Int32(MSG_CTRUNC) != 0
                        }
                        return outcome
                    }
                }
            }
            if truncated { throw error(.protocolViolation("more fds than the \(HALDProtocol.grantedFDCount) of a grant")) }
            switch code {
            case 0 where result == 0: return (bytes, fds)
            case 0: bytes += buffer[bytes.count..<bytes.count + result]
            case ECONNRESET: return (bytes, fds)
            case EAGAIN: throw error(.timedOut)
            default: throw system("recvmsg", code)
            }
        }
        return (bytes, fds)
    }

    /// Takes ownership of the SCM_RIGHTS fds in a received message.
    private static func receivedFDs(_ message: inout msghdr) -> [OwnedFD] {
        var fds: [OwnedFD] = []
        var header = ivs_cmsg_firsthdr(&message)
        while let current = header {
            if current.pointee.cmsg_level == SOL_SOCKET && current.pointee.cmsg_type == Int32(SCM_RIGHTS) {
                let payload = Int(current.pointee.cmsg_len) - Int(ivs_cmsg_len(0))
                let data = UnsafeRawPointer(ivs_cmsg_data(current)!)
                for index in 0..<payload / MemoryLayout<Int32>.size {
                    fds.append(OwnedFD(taking: data.loadUnaligned(fromByteOffset: index * 4, as: Int32.self)))
                }
            }
            header = ivs_cmsg_nxthdr(&message, current)
        }
        return fds
    }
}
