import Glibc
import LinuxSystem

/// What a watched socket is ready for, in the readiness set's own terms.
package struct Readiness: OptionSet {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Input, a connection to accept, or the end of the stream (hang-up).
    package static let readable = Readiness(rawValue: 1 << 0)
    /// Room to send.
    package static let writable = Readiness(rawValue: 1 << 1)
    /// An error is pending on the socket: the next call on it returns it,
    /// with the socket's own errno.
    package static let failed = Readiness(rawValue: 1 << 2)
}

/// What the readiness set reports to: a listener or a peer socket.
package protocol ReadinessTarget: AnyObject {
    func ready(_ readiness: Readiness)
}

/// Readiness of every socket the server serves on (the listeners and the
/// peers) through one epoll set that the loop watches with a single libuv
/// poll handle: one path, one event type.
///
/// Why not a uv_poll handle per peer: uv_poll_init probes every new fd with
/// epoll_ctl ADD and DEL and sets FIONBIO, and closing one costs another
/// DEL, so each accepted connection paid four extra system calls (about a
/// third of a HALD handshake's). Here a peer costs one epoll_ctl ADD, and
/// closing its fd takes it out of the set. Everything still runs on the
/// loop's thread, and nothing blocks: the set is read with a zero timeout
/// only when libuv says it is readable.
///
/// A peer is known by a token: its fd in the low 32 bits and a
/// registration counter above, so an event still in flight for an fd
/// that was closed and reused finds nobody.
package final class ReadinessSet {
    private struct Entry {
        let token: UInt64
        let target: ReadinessTarget
    }

    private let epoll: Epoll
    private var poll: PollHandle!
    /// Registered peers by fd number, held until they are forgotten.
    private let entries = FDTable<Entry>()
    private var generation: UInt64 = 0
    /// One read buffer for every peer: reads happen one at a time on the
    /// loop's thread, and each peer's input is handled before the next
    /// read. A peer's event carries a slice of it (no copy).
    package var readBuffer = [UInt8](repeating: 0, count: 4096)

    package init(loop: EventLoop) throws {
        epoll = try Epoll()
        poll = try PollHandle(loop: loop, fd: epoll.fd.rawValue) { [unowned self] _, _ in self.dispatch() }
        poll.watch(readable: true, writable: false)
    }

    /// Enters `target` for `fd`; it is watched for nothing until `watch`.
    package func register(fd: Int32, target: ReadinessTarget) -> UInt64 {
        generation &+= 1
        let token = generation << 32 | UInt64(UInt32(bitPattern: fd))
        entries[fd] = Entry(token: token, target: target)
        return token
    }

    /// Watches the socket of `token` for input, and for room to write when
    /// `writable` (level-triggered); `add` the first time.
    package func watch(token: UInt64, writable: Bool, add: Bool) throws(SystemError) {
        // Raw bits, not an array literal: that goes through SetAlgebra's
        // generic init, unspecialized across the module boundary (5,000
        // instructions per handshake).
        let events = writable ? Epoll.Events(rawValue: Epoll.Events.input.rawValue | Epoll.Events.output.rawValue) : .input
        if add {
            try epoll.add(Self.fd(of: token), events: events, token: token)
        } else {
            try epoll.modify(Self.fd(of: token), events: events, token: token)
        }
    }

    /// Lets the peer of `token` go. No EPOLL_CTL_DEL: closing the fd, which
    /// the peer does next, removes it from the set.
    package func forget(token: UInt64) {
        let fd = Self.fd(of: token)
        if entries[fd]?.token == token { entries[fd] = nil }
    }

    private func target(for token: UInt64) -> ReadinessTarget? {
        guard let entry = entries[Self.fd(of: token)], entry.token == token else { return nil }
        return entry.target
    }

    private static func fd(of token: UInt64) -> Int32 {
        Int32(bitPattern: UInt32(truncatingIfNeeded: token))
    }

    /// One batch of ready sockets (the loop comes back for more while the
    /// set stays readable).
    private func dispatch() {
        // Only after libuv saw the set readable, so it cannot fail but for
        // a bug of ours (which traps).
        _ = try? epoll.wait(timeout: .zero) { token, events in
            target(for: token)?.ready(Self.readiness(events))
        }
    }

    /// epoll's bits in our terms: a hang-up is the end of the stream, which
    /// a read sees.
    package static func readiness(_ events: Epoll.Events) -> Readiness {
        let bits = events.rawValue
        let readable = Epoll.Events.input.rawValue | Epoll.Events.hangUp.rawValue | Epoll.Events.peerClosedWriting.rawValue
        var readiness: Readiness = []
        if bits & readable != 0 { readiness.insert(.readable) }
        if bits & Epoll.Events.output.rawValue != 0 { readiness.insert(.writable) }
        if bits & Epoll.Events.error.rawValue != 0 { readiness.insert(.failed) }
        return readiness
    }

    /// The same from epoll's raw bits.
    package static func readiness(epollEvents bits: UInt32) -> Readiness {
        readiness(Epoll.Events(rawValue: bits))
    }

    /// Stops watching the set and closes it; every peer must have been
    /// forgotten.
    package func close() {
        poll.close()
        epoll.fd.close()
        entries.removeAll()
    }
}
