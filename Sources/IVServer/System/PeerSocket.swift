import Descriptors
import Glibc

/// Who handles a peer socket's events: its connection.
protocol PeerSocketDelegate: AnyObject {
    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event)
}

/// An accepted, non-blocking connection watched through the server's
/// ReadinessSet (one libuv poll handle for every peer), with
/// an outgoing queue of messages that may carry fds. It turns readiness into
/// events for its delegate; what the bytes mean is up to the delegate.
final class PeerSocket: ReadinessTarget {
    enum Event {
        /// Bytes read; the slice is only valid during the call.
        case received(ArraySlice<UInt8>)
        /// The peer sent file descriptors (now closed) that nobody asked for.
        case unexpectedFDs
        case endOfStream
        /// Everything queued has been sent.
        case flushed
        case failed(SystemError)
    }

    struct Outgoing {
        var bytes: [UInt8]
        /// Borrowed: the server owns these fds and outlives every connection.
        var fds: [Int32]
    }

    let fd: OwnedFD
    let peer: PeerCredentials?
    /// Held until `close`, which breaks the cycle with the connection that
    /// owns this socket; a closed socket reports nothing.
    var delegate: PeerSocketDelegate?
    private var outbox: [Outgoing] = []
    private var nextMessage = 0
    private var bytesSentOfNext = 0
    private let set: ReadinessSet
    private var token: UInt64 = 0
    private let readSize: Int
    /// Whether output is watched too; nil until the socket joins the epoll set.
    private var watchingWritable: Bool?

    /// Joins the readiness set; input is watched from the first `send`
    /// on, so the first bytes go out before the epoll_ctl that registers
    /// the socket (every connection starts by sending).
    init(readiness set: ReadinessSet, fd: OwnedFD, peer: PeerCredentials?, readSize: Int) {
        self.fd = fd
        self.set = set
        self.peer = peer
        self.readSize = min(readSize, set.readBuffer.count)
        token = set.register(fd: fd.rawValue, target: self)
    }

    var isClosed: Bool { !fd.isOpen }

    /// Queues messages and sends what the socket takes now.
    func send(_ messages: [Outgoing]) {
        guard !isClosed else { return }
        if outbox.isEmpty {
            outbox = messages  // shares the caller's (often prebuilt) array
        } else {
            outbox += messages
        }
        flush()
    }

    /// Stops watching, then closes the fd (which leaves the epoll set).
    func close() {
        guard !isClosed else { return }
        set.forget(token: token)
        fd.close()
        outbox = []
        delegate = nil
    }

    func readinessChanged(status: Int32, events: Int32) {
        guard !isClosed else { return }
        if status < 0 {
            // libuv reports POLLERR as UV_EBADF; the socket's own error says more.
            var code: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd.rawValue, SOL_SOCKET, SO_ERROR, &code, &length)
            onEvent(.failed(SystemError("poll", errno: code != 0 ? code : ECONNRESET)))
            return
        }
        if events & PollHandle.writableEvent != 0 {
            flush()
        }
        if !isClosed && events & PollHandle.readableEvent != 0 {
            readOnce()
        }
    }

    private func readOnce() {
        // One read per readiness callback: level-triggered polling calls us
        // again if more is waiting, and nobody else waits behind a chatty peer.
        let result: ReceiveResult
        do {
            // Room for a few fds, so a peer that sends some is noticed; they
            // are closed at once, and any beyond the room never reach us.
            result = try set.readBuffer.withUnsafeMutableBytes { buffer in
                Result { () throws(SystemError) in
                    try UnixSocket.receive(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<readSize]), maximumFDs: 4)
                }
            }.get()
        } catch {
            onEvent(.failed(error))
            return
        }
        switch result {
        case .wouldBlock: return  // spurious wakeup
        case .endOfStream: onEvent(.endOfStream)
        case let .data(_, fds, truncated) where !fds.isEmpty || truncated:
            onEvent(.unexpectedFDs)
        case let .data(count, _, _): onEvent(.received(set.readBuffer[..<count]))
        }
    }

    private func flush() {
        while nextMessage < outbox.count {
            // Whole messages queued together (the QEMU handshake) go out in
            // one sendmmsg rather than one sendmsg each.
            if bytesSentOfNext == 0 && outbox.count - nextMessage > 1 {
                let sent: [Int]?
                do {
                    sent = try UnixSocket.sendBatch(fd, outbox[nextMessage...])
                } catch {
                    onEvent(.failed(error))
                    return
                }
                guard let sent, !sent.isEmpty else {
                    watch(writable: true)
                    return
                }
                for bytes in sent {
                    if bytes == outbox[nextMessage].bytes.count {
                        nextMessage += 1
                    } else {
                        bytesSentOfNext = bytes  // partial: the rest goes by sendmsg
                        break
                    }
                }
                continue
            }
            let message = outbox[nextMessage]
            // The fds go with the first byte; a resumed partial send has none.
            let fds = bytesSentOfNext == 0 ? message.fds : []
            let sent: Int?
            do {
                sent = try UnixSocket.send(fd, message.bytes[bytesSentOfNext...], fds: fds)
            } catch {
                onEvent(.failed(error))
                return
            }
            guard let sent else {
                watch(writable: true)
                return
            }
            bytesSentOfNext += sent
            if bytesSentOfNext == message.bytes.count {
                nextMessage += 1
                bytesSentOfNext = 0
            }
        }
        outbox = []
        nextMessage = 0
        guard watch(writable: false) else { return }
        onEvent(.flushed)
    }

    /// Always readable, writable while output waits; false (and the
    /// failure reported) when the set would not take the change.
    @discardableResult
    private func watch(writable: Bool) -> Bool {
        guard writable != watchingWritable else { return true }
        do {
            try set.watch(token: token, writable: writable, add: watchingWritable == nil)
        } catch {
            onEvent(.failed(error))
            return false
        }
        watchingWritable = writable
        return true
    }

    private func onEvent(_ event: Event) {
        delegate?.peerSocket(self, produced: event)
    }
}
