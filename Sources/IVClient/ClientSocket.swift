import Glibc
import LinuxSystem

/// A blocking UNIX stream connection with a timeout on every step, for the
/// client's two protocols (the HALD handshake and QEMU's multi-peer
/// protocol), over the system layer's UnixSocket: connect, send, and
/// receive bytes with the fds that come with them (owned at once, so none
/// leaks when a reply is rejected). Failures become the caller's errors.
struct ClientSocket {
    let fd: OwnedFD
    /// Turns a failure into the caller's error (it knows the socket path
    /// and the region, if any).
    let fail: (IVClientError.Kind) -> IVClientError

    static func connect(path: String, timeout: Duration,
                        fail: @escaping (IVClientError.Kind) -> IVClientError) throws(IVClientError) -> ClientSocket {
        if let problem = SocketPath.problem(path) { throw fail(.invalidArgument("\(path) (\(problem))")) }
        do {
            return ClientSocket(fd: try UnixSocket.connect(path: path, timeout: timeout), fail: fail)
        } catch {
            switch error.errno {
            case ENOENT: throw fail(.socketMissing)
            case ECONNREFUSED: throw fail(.serverNotListening)
            case EAGAIN, ETIMEDOUT: throw fail(.timedOut)
            default: throw fail(.system(operation: error.operation, errno: error.errno))
            }
        }
    }

    func send(_ bytes: [UInt8]) throws(IVClientError) {
        var sent = 0
        while sent < bytes.count {
            let count: Int?
            do {
                count = try UnixSocket.send(fd, bytes[sent...])
            } catch where error.errno == EPIPE || error.errno == ECONNRESET {
                throw fail(.refused)
            } catch {
                throw fail(.system(operation: error.operation, errno: error.errno))
            }
            guard let count else { throw fail(.timedOut) }  // SO_SNDTIMEO passed
            sent += count
        }
    }

    /// Reads until `count` bytes or the end of the stream, keeping every fd
    /// that arrives; more than `maximumFDs` in one read is a protocol
    /// violation (`tooManyFDs` says what the protocol allows).
    func receive(count: Int, maximumFDs: Int, tooManyFDs: String) throws(IVClientError) -> (bytes: [UInt8], fds: [OwnedFD]) {
        var bytes: [UInt8] = []
        var fds: [OwnedFD] = []
        var buffer = [UInt8](repeating: 0, count: count)
        while bytes.count < count {
            let wanted = count - bytes.count
            let result: ReceiveResult
            do {
                // Room for one fd too many, to notice it.
                result = try buffer.withUnsafeMutableBytes { raw in
                    try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<wanted]), maximumFDs: maximumFDs + 1)
                }
            } catch let error as SystemError where error.errno == ECONNRESET {
                return (bytes, fds)
            } catch let error as SystemError {
                throw fail(.system(operation: error.operation, errno: error.errno))
            } catch {
                throw fail(.system(operation: "recvmsg", errno: EIO))
            }
            switch result {
            case .endOfStream:
                return (bytes, fds)
            case .wouldBlock:
                throw fail(.timedOut)
            case let .data(received, newFDs, truncated):
                fds += newFDs
                if truncated || newFDs.count > maximumFDs { throw fail(.protocolViolation(tooManyFDs)) }
                bytes += buffer[..<received]
            }
        }
        return (bytes, fds)
    }
}
