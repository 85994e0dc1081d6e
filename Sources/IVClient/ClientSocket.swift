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
            default: throw fail(.system(error))
            }
        }
    }

    func send(_ bytes: [UInt8]) throws(IVClientError) {
        let complete: Bool
        do {
            complete = try UnixSocket.sendAll(fd, bytes)
        } catch where error.errno == EPIPE || error.errno == ECONNRESET {
            throw fail(.refused)
        } catch {
            throw fail(.system(error))
        }
        guard complete else { throw fail(.timedOut) }  // SO_SNDTIMEO passed
    }

    /// Whether the peer has sent more than was read, unasked.
    func hasWaitingBytes() throws(IVClientError) -> Bool {
        do {
            return try UnixSocket.hasWaitingBytes(fd)
        } catch {
            throw fail(.system(error))
        }
    }

    /// Reads until `count` bytes or the end of the stream, keeping every fd
    /// that arrives; more than `maximumFDs` in one read is a protocol
    /// violation (`tooManyFDs` says what the protocol allows).
    func receive(count: Int, maximumFDs: Int, tooManyFDs: String) throws(IVClientError) -> (bytes: [UInt8], fds: [OwnedFD]) {
        let received: UnixSocket.Received
        do {
            // Room for one fd too many, to notice it.
            received = try UnixSocket.receive(fd, upTo: count, maximumFDs: maximumFDs + 1)
        } catch {
            throw fail(.system(error))
        }
        if received.truncated || received.fds.count > maximumFDs { throw fail(.protocolViolation(tooManyFDs)) }
        if received.end == .timedOut { throw fail(.timedOut) }
        return (received.bytes, received.fds)
    }
}
