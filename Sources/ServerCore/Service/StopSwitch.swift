import EventLoop
import Synchronization

/// How another thread stops a serving server: a uv_async handle woken under
/// a lock. A request made before the loop exists is kept, so a server told
/// to stop while it starts stops as soon as it serves.
public final class StopSwitch: Sendable {
    private struct State {
        var handle: AsyncHandle?
        var requested = false
    }

    private let state = Mutex(State())

    public init() {}

    /// Loop thread: `onStop` runs (on the loop) when a stop is requested;
    /// at once (on the next turn) if one was before.
    public func arm(on loop: EventLoop, _ onStop: @escaping () -> Void) throws(UVError) {
        let handle = try AsyncHandle(loop: loop, callback: onStop)
        let early = state.withLock { state in
            state.handle = handle
            return state.requested
        }
        if early { handle.wake() }
    }

    /// Any thread.
    public func request() {
        state.withLock { state in
            state.requested = true
            state.handle?.wake()
        }
    }

    /// Loop thread: closes the handle (the loop can then run out).
    public func disarm() {
        state.withLock { state in
            state.handle?.close()
            state.handle = nil
        }
    }
}
