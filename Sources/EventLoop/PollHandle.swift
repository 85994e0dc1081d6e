import CLibUV
import CLinux
import Glibc
import LinuxSystem

/// Watches a file descriptor for readability/writability (level-triggered).
/// The fd stays owned by the caller, who must close the handle before the fd.
public final class PollHandle: LoopHandle {
    public typealias Callback = (_ status: Int32, _ events: Int32) -> Void
    public static let readableEvent = Int32(UV_READABLE.rawValue)
    public static let writableEvent = Int32(UV_WRITABLE.rawValue)

    private var callback: Callback?
    private var watching: Int32 = 0

    public init(loop: EventLoop, fd: Int32, callback: @escaping Callback) throws(UVError) {
        self.callback = callback
        try super.init(loop: loop, uv_poll_t.self, operation: "uv_poll_init") { uv_poll_init($0, $1, fd) }
    }

    /// Watches for the given events; a no-op when they are already watched.
    public func watch(readable: Bool, writable: Bool) {
        precondition(!isClosed, "poll handle used after close")
        let events = (readable ? Self.readableEvent : 0) | (writable ? Self.writableEvent : 0)
        guard events != watching else { return }
        watching = events
        if events == 0 {
            uv_poll_stop(handle(as: uv_poll_t.self))
        } else {
            uv_poll_start(handle(as: uv_poll_t.self), events, pollCallback)
        }
    }

    override func dropCallback() { callback = nil }

    func fire(status: Int32, events: Int32) {
        callback?(status, events)
    }
}

private func pollCallback(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    owner(handle, as: PollHandle.self)?.fire(status: status, events: events)
}
