import CLibUV
import CLinux
import Glibc
import LinuxSystem

/// A one-shot timer on the loop (uv_timer). Only armed while needed.
public final class TimerHandle: LoopHandle {
    private var callback: (() -> Void)?

    public init(loop: EventLoop, callback: @escaping () -> Void) throws(UVError) {
        self.callback = callback
        try super.init(loop: loop, uv_timer_t.self, operation: "uv_timer_init") { uv_timer_init($0, $1) }
    }

    /// Fires once after `milliseconds`, replacing any earlier arming.
    public func arm(milliseconds: UInt64) {
        precondition(!isClosed, "timer used after close")
        uv_timer_start(handle(as: uv_timer_t.self), timerCallback, milliseconds, 0)
    }

    public func disarm() {
        guard !isClosed else { return }
        uv_timer_stop(handle(as: uv_timer_t.self))
    }

    /// The loop's cached clock, in milliseconds.
    public var now: UInt64 { uv_now(handle(as: uv_timer_t.self).pointee.loop) }

    override func dropCallback() { callback = nil }

    func fire() {
        callback?()
    }
}

private func timerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    owner(handle, as: TimerHandle.self)?.fire()
}
