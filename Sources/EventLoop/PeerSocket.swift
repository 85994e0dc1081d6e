import Glibc
import LinuxSystem

/// Who handles a peer socket's events: its connection.
package protocol PeerSocketDelegate: AnyObject {
    func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event)
}

/// An accepted, non-blocking connection watched through the server's
/// ReadinessSet (one libuv poll handle for every peer), with
/// an outgoing queue of messages that may carry fds. It turns readiness into
/// events for its delegate; what the bytes mean is up to the delegate.
package final class PeerSocket: ReadinessTarget {
    package enum Event {
        /// Bytes read, as a slice of the set's shared read buffer (a
        /// handler that keeps it makes the next read copy the buffer).
        case received(ArraySlice<UInt8>)
        /// The peer sent file descriptors (now closed) that nobody asked for.
        case unexpectedFDs
        case endOfStream
        /// Everything queued has been sent.
        case flushed
        case failed(SystemError)
    }

    package let fd: OwnedFD
    package let peer: PeerCredentials?
    /// Held until `close`, which breaks the cycle with the connection that
    /// owns this socket; a closed socket reports nothing.
    package var delegate: PeerSocketDelegate?
    /// What is being sent, and what was queued behind it (rare: every
    /// exchange sends, then waits for the peer).
    private var sending: OutgoingMessages?
    private var queued: [OutgoingMessages] = []
    private var nextMessage = 0
    private var bytesSentOfNext = 0
    /// Messages queued and not yet wholly sent (a peer that never reads
    /// makes it grow; its owner decides how far).
    package private(set) var unsentMessages = 0
    private let set: ReadinessSet
    private var token: UInt64 = 0
    private let readSize: Int
    /// Whether output is watched too; nil until the socket joins the epoll set.
    private var watchingWritable: Bool?

    /// Joins the readiness set; input is watched from the first `send`
    /// on, so the first bytes go out before the epoll_ctl that registers
    /// the socket (every connection starts by sending).
    package init(readiness set: ReadinessSet, fd: OwnedFD, peer: PeerCredentials?, readSize: Int) {
        self.fd = fd
        self.set = set
        self.peer = peer
        self.readSize = min(readSize, set.readBuffer.count)
        token = set.register(fd: fd.rawValue, target: self)
    }

    package var isClosed: Bool { !fd.isOpen }

    /// Queues messages and sends what the socket takes now.
    package func send(_ messages: OutgoingMessages) {
        guard !isClosed else { return }
        unsentMessages += messages.count
        if sending == nil {
            sending = messages
        } else {
            queued.append(messages)
        }
        flush()
    }

    /// Watches for input without sending first (a connection taken over
    /// from a previous server process: it is already past its greeting).
    package func watchInput() {
        guard !isClosed, watchingWritable == nil else { return }
        watch(writable: false)
    }

    /// Stops watching, then closes the fd (which leaves the epoll set).
    package func close() {
        guard !isClosed else { return }
        set.forget(token: token)
        fd.close()
        sending = nil
        queued = []
        unsentMessages = 0
        delegate = nil
    }

    package func ready(_ readiness: Readiness) {
        guard !isClosed else { return }
        if readiness.contains(.writable) && sending != nil {
            flush()
        }
        // A pending error comes back from the read itself, with its errno.
        if !isClosed && !readiness.isDisjoint(with: [.readable, .failed]) {
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
        while let messages = sending {
            if bytesSentOfNext > 0 {
                // The rest of a message cut short: plain bytes (its fds
                // went with the first byte).
                let message = messages.messages[nextMessage]
                let sent: Int?
                do {
                    sent = try UnixSocket.send(fd, message.bytes[bytesSentOfNext...])
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
                    unsentMessages -= 1
                    bytesSentOfNext = 0
                }
            } else {
                // Whole messages, several in one sendmmsg (the QEMU handshake).
                let progress: (whole: Int, partialBytes: Int)?
                do {
                    progress = try messages.send(on: fd.rawValue, from: nextMessage)
                } catch {
                    onEvent(.failed(error))
                    return
                }
                guard let progress else {
                    watch(writable: true)
                    return
                }
                nextMessage += progress.whole
                unsentMessages -= progress.whole
                bytesSentOfNext = progress.partialBytes
            }
            if nextMessage == messages.count {
                sending = queued.isEmpty ? nil : queued.removeFirst()
                nextMessage = 0
            }
        }
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
