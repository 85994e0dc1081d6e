import CLinux
import Glibc

/// An epoll set: fds watched for what they are ready for, each reported
/// with a token the caller chose (the server's readiness set, ivctl watch).
package final class Epoll {
    /// What a watched fd is ready for, as epoll's bits.
    package struct Events: OptionSet, Sendable {
        package let rawValue: UInt32
        package init(rawValue: UInt32) { self.rawValue = rawValue }

        package static let input = Events(rawValue: UInt32(EPOLLIN.rawValue))
        package static let output = Events(rawValue: UInt32(EPOLLOUT.rawValue))
        package static let error = Events(rawValue: UInt32(EPOLLERR.rawValue))
        package static let hangUp = Events(rawValue: UInt32(EPOLLHUP.rawValue))
        package static let peerClosedWriting = Events(rawValue: UInt32(EPOLLRDHUP.rawValue))
        /// Edge-triggered: one report per change (a write to an eventfd),
        /// whether or not anybody reads.
        package static let edgeTriggered = Events(rawValue: EPOLLET.rawValue)
    }

    /// The set's own fd (readable when something in it is ready).
    package let fd: OwnedFD
    /// Where one batch of ready fds lands.
    private let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: Int(IVS_EPOLL_BATCH))
    private let events = UnsafeMutablePointer<UInt32>.allocate(capacity: Int(IVS_EPOLL_BATCH))

    package init() throws(SystemError) {
        fd = OwnedFD(taking: try Posix.retrying(.epollCreate) { ivs_epoll_create() })
    }

    deinit {
        tokens.deallocate()
        events.deallocate()
    }

    /// Watches `watched` for `events`, reported with `token`.
    package func add(_ watched: Int32, events: Events, token: UInt64) throws(SystemError) {
        try Posix.retrying(.epollControl, "epoll_ctl(ADD)") { ivs_epoll_control(fd.rawValue, EPOLL_CTL_ADD, watched, events.rawValue, token) }
    }

    /// Changes what `watched` is watched for.
    package func modify(_ watched: Int32, events: Events, token: UInt64) throws(SystemError) {
        try Posix.retrying(.epollControl, "epoll_ctl(MOD)") { ivs_epoll_control(fd.rawValue, EPOLL_CTL_MOD, watched, events.rawValue, token) }
    }

    /// One batch of ready fds, waiting up to `timeout` (zero: none, nil:
    /// forever) for the first: `body` gets each one's token and events.
    /// How many there were (0 on timeout).
    @discardableResult
    package func wait(timeout: Duration?, _ body: (UInt64, Events) -> Void) throws(SystemError) -> Int {
        // .zero, the readiness set's every call, without Duration's arithmetic.
        let milliseconds = timeout.map { $0 == .zero ? 0 : SystemTime.milliseconds(roundingUp: $0) } ?? -1
        let count = Int(try Posix.retrying(.epollWait) {
            ivs_epoll_wait_events(fd.rawValue, tokens, events, Int32(IVS_EPOLL_BATCH), milliseconds)
        })
        for index in 0..<count { body(tokens[index], Events(rawValue: events[index])) }
        return count
    }
}
