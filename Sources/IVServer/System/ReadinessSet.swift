import Descriptors
import CLibUV
import Glibc

/// Readiness of the peer sockets through one epoll set that the loop
/// watches with a single libuv poll handle.
///
/// Why not a uv_poll handle per peer: uv_poll_init probes every new fd with
/// epoll_ctl ADD and DEL and sets FIONBIO, and closing one costs another
/// DEL, so each accepted connection paid four extra system calls (about a
/// third of a HALD handshake's). Here a peer costs one epoll_ctl ADD, and
/// closing its fd takes it out of the set. Everything still runs on the
/// loop's thread, and nothing blocks: the set is read with a zero timeout
/// only when libuv says it is readable.
final class ReadinessSet {
    typealias Callback = PollHandle.Callback

    /// One peer's place in the set; the fd stays owned by the caller, who
    /// closes the registration before the fd.
    final class Registration {
        fileprivate let token: UInt64
        fileprivate var callback: Callback?
        private weak var set: ReadinessSet?
        private let fd: Int32
        private var watching: UInt32 = 0
        private var added = false
        private(set) var isClosed = false

        fileprivate init(set: ReadinessSet, fd: Int32, token: UInt64, callback: @escaping Callback) {
            self.set = set
            self.fd = fd
            self.token = token
            self.callback = callback
        }

        /// Watches for the given events (level-triggered), like PollHandle.
        func watch(readable: Bool, writable: Bool) throws(SystemError) {
            precondition(!isClosed, "readiness registration used after close")
            guard let set, set.epoll.isOpen else { throw SystemError("epoll_ctl", errno: EBADF) }
            let events = (readable ? UInt32(EPOLLIN.rawValue) : 0) | (writable ? UInt32(EPOLLOUT.rawValue) : 0)
            guard events != watching || !added else { return }
            let operation = added ? EPOLL_CTL_MOD : EPOLL_CTL_ADD
            guard ivs_epoll_control(set.epoll.rawValue, operation, fd, events, token) == 0 else {
                throw SystemError("epoll_ctl")
            }
            added = true
            watching = events
        }

        /// Forgets the peer. No EPOLL_CTL_DEL: closing the fd, which the
        /// owner does next, removes it from the set, and the token is never
        /// reused, so an event still in flight finds nobody.
        func close() {
            guard !isClosed else { return }
            isClosed = true
            callback = nil
            set?.forget(self)
        }
    }

    fileprivate let epoll: OwnedFD
    private var poll: PollHandle!
    /// Registrations by fd number (fds are small and dense). A token is
    /// the fd in its low 32 bits and a registration counter above, so an
    /// event for an fd that was closed and reused finds a different token.
    private var registrations: [Registration?] = []
    private var generation: UInt64 = 0
    /// One read buffer for every peer: reads happen one at a time on the
    /// loop's thread, and each peer's input is consumed before the next read.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
    private var tokens = [UInt64](repeating: 0, count: Int(IVS_EPOLL_BATCH))
    private var events = [UInt32](repeating: 0, count: Int(IVS_EPOLL_BATCH))

    init(loop: EventLoop) throws {
        let raw = ivs_epoll_create()
        guard raw >= 0 else { throw SystemError("epoll_create1") }
        epoll = OwnedFD(taking: raw)
        poll = try PollHandle(loop: loop, fd: raw) { [unowned self] _, _ in self.dispatch() }
        poll.watch(readable: true, writable: false)
    }

    deinit { readBuffer.deallocate() }

    /// Adds `fd` to the set; it is watched for nothing until `watch`.
    func register(fd: Int32, callback: @escaping Callback) -> Registration {
        generation &+= 1
        let token = generation << 32 | UInt64(UInt32(bitPattern: fd))
        let registration = Registration(set: self, fd: fd, token: token, callback: callback)
        let slot = Int(fd)
        if slot >= registrations.count {
            registrations += repeatElement(nil, count: max(slot + 1 - registrations.count, registrations.count))
        }
        registrations[slot] = registration
        return registration
    }

    fileprivate func forget(_ registration: Registration) {
        let slot = Int(UInt32(truncatingIfNeeded: registration.token))
        if slot < registrations.count, registrations[slot] === registration { registrations[slot] = nil }
    }

    private func registration(for token: UInt64) -> Registration? {
        let slot = Int(UInt32(truncatingIfNeeded: token))
        guard slot < registrations.count, let registration = registrations[slot], registration.token == token else { return nil }
        return registration
    }

    /// One batch of ready peers (the loop comes back for more while the set
    /// stays readable). Errors are reported as libuv reports them.
    private func dispatch() {
        let count = ivs_epoll_wait_events(epoll.rawValue, &tokens, &events, Int32(tokens.count), 0)
        guard count > 0 else { return }
        for index in 0..<Int(count) {
            guard let registration = registration(for: tokens[index]) else { continue }
            let bits = events[index]
            if bits & UInt32(EPOLLERR.rawValue) != 0 {
                registration.callback?(-EBADF, 0)
                continue
            }
            var ready: Int32 = 0
            if bits & UInt32(EPOLLIN.rawValue | EPOLLHUP.rawValue) != 0 { ready |= PollHandle.readableEvent }
            if bits & UInt32(EPOLLOUT.rawValue | EPOLLHUP.rawValue) != 0 { ready |= PollHandle.writableEvent }
            registration.callback?(0, ready)
        }
    }

    /// Stops watching the set and closes it; every registration must have
    /// been closed.
    func close() {
        poll.close()
        epoll.close()
        registrations = []
    }
}
