import CLinux
import Descriptors
import Glibc

/// A blocking UNIX stream connection with a timeout on every step, for the
/// client's two protocols (the HALD handshake and QEMU's multi-peer
/// protocol): connect, send, and receive bytes with the fds that come
/// with them (owned at once, so none leaks when a reply is rejected).
struct ClientSocket {
    let fd: OwnedFD
    /// Turns a failure into the caller's error (it knows the socket path
    /// and the region, if any).
    let fail: (IVClientError.Kind) -> IVClientError

    static func connect(path socketPath: String, timeout: Duration,
                        fail: @escaping (IVClientError.Kind) -> IVClientError) throws(IVClientError) -> ClientSocket {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < ivs_sun_path_capacity() else {
            throw fail(.invalidArgument("the socket path is \(path.count) bytes; a UNIX socket path has at most \(ivs_sun_path_capacity() - 1)"))
        }
        withUnsafeMutableBytes(of: &address.sun_path) { field in
            field.copyBytes(from: path)
            field[path.count] = 0
        }
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw fail(.system(operation: "socket", errno: errno)) }
        let socket = ClientSocket(fd: OwnedFD(taking: raw), fail: fail)
        try socket.setTimeout(timeout)
        let (_, code) = Syscall.retrying {
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Int(Glibc.connect(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)))
                }
            }
        }
        switch code {
        case 0: return socket
        case ENOENT: throw fail(.socketMissing)
        case ECONNREFUSED: throw fail(.serverNotListening)
        case EAGAIN, ETIMEDOUT: throw fail(.timedOut)
        default: throw fail(.system(operation: "connect", errno: code))
        }
    }

    /// SO_RCVTIMEO and SO_SNDTIMEO: a step that takes longer fails with
    /// `.timedOut`.
    func setTimeout(_ timeout: Duration) throws(IVClientError) {
        var limit = timeval(tv_sec: Int(timeout.components.seconds),
                            tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        if limit.tv_sec == 0 && limit.tv_usec == 0 { limit.tv_usec = 1 }  // zero would mean "no timeout"
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            guard setsockopt(fd.rawValue, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
                throw fail(.system(operation: "setsockopt", errno: errno))
            }
        }
    }

    func send(_ bytes: [UInt8]) throws(IVClientError) {
        var sent = 0
        while sent < bytes.count {
            let (result, code) = Syscall.retrying {
                bytes[sent...].withUnsafeBytes { Glibc.send(fd.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            switch code {
            case 0: sent += result
            case EPIPE, ECONNRESET: throw fail(.refused)
            case EAGAIN: throw fail(.timedOut)
            default: throw fail(.system(operation: "send", errno: code))
            }
        }
    }

    /// Reads until `count` bytes or the end of the stream, keeping every fd
    /// that arrives; more than `maximumFDs` in one read is a protocol
    /// violation (`tooManyFDs` says what the protocol allows).
    func receive(count: Int, maximumFDs: Int, tooManyFDs: String) throws(IVClientError) -> (bytes: [UInt8], fds: [OwnedFD]) {
        var bytes: [UInt8] = []
        var fds: [OwnedFD] = []
        let controlSize = ivs_cmsg_space(MemoryLayout<Int32>.size * (maximumFDs + 1))  // room for one too many, to notice it
        var buffer = [UInt8](repeating: 0, count: count)
        var control = [UInt8](repeating: 0, count: controlSize)
        while bytes.count < count {
            var truncated = false
            var received: [OwnedFD] = []
            let (result, code) = buffer.withUnsafeMutableBytes { data in
                control.withUnsafeMutableBytes { controlBytes in
                    var vector = iovec(iov_base: data.baseAddress! + bytes.count, iov_len: count - bytes.count)
                    return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                        var message = msghdr()
                        message.msg_iov = vectorPointer
                        message.msg_iovlen = 1
                        message.msg_control = controlBytes.baseAddress
                        message.msg_controllen = controlBytes.count
                        let outcome = Syscall.retrying { recvmsg(fd.rawValue, &message, Int32(MSG_CMSG_CLOEXEC)) }
                        if outcome.result >= 0 {
                            received = Self.receivedFDs(&message)
                            truncated = message.msg_flags & Int32(MSG_CTRUNC) != 0
                        }
                        return outcome
                    }
                }
            }
            fds += received
            if truncated || received.count > maximumFDs { throw fail(.protocolViolation(tooManyFDs)) }
            switch code {
            case 0 where result == 0: return (bytes, fds)
            case 0: bytes += buffer[bytes.count..<bytes.count + result]
            case ECONNRESET: return (bytes, fds)
            case EAGAIN: throw fail(.timedOut)
            default: throw fail(.system(operation: "recvmsg", errno: code))
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
