import EventLoop
import Synchronization

/// What both servers' lifecycles share: where the server is in its life,
/// the switch another thread stops it with, and the loop it serves on,
/// built, run, stopped and closed the same way. The server says what is
/// its own: what it closes when it stops (listeners, connections), and
/// what it removes when it closes (its files). The only arrows, each one
/// asserted:
///
///     created ──start──> started ──serve──> serving ──stop──> stopped ──close──> closed
///        └──────(start failed)──────┴──────────────(close, never served)────────┘
public final class ServingControl: @unchecked Sendable {
    // @unchecked: everything but `stopSwitch` is used on the server's
    // thread only; `requestStop` (any thread) touches the switch alone,
    // under its lock.
    public enum State: Equatable, Sendable {
        case created, started, serving, stopped, closed
    }

    public private(set) var state = State.created
    private let owner: String
    public private(set) var serving: ServingLoop?
    private var closeConnections: () -> Void = {}

    /// How another thread stops the server: a uv_async handle woken under
    /// the lock. A request made before the loop exists is kept, so a server
    /// told to stop while it starts stops as soon as it serves.
    private struct StopSwitch {
        var handle: AsyncHandle?
        var requested = false
    }
    private let stopSwitch = Mutex(StopSwitch())

    public init(of owner: String) {
        self.owner = owner
    }

    /// Moves on; anything but the arrows above is a bug.
    private func move(to next: State) {
        switch (state, next) {
        case (.created, .started), (.started, .serving), (.serving, .stopped), (.stopped, .closed),
             (.created, .closed), (.started, .closed):
            break
        default:
            preconditionFailure("\(owner): \(state) -> \(next)")
        }
        state = next
    }

    /// `start` succeeded.
    public func started() {
        move(to: .started)
    }

    /// Builds the loop to serve on. `closeConnections` closes the server's
    /// listeners and connections (a stop, or a close after a failed serve);
    /// `stopRequested` runs on the loop when another thread asks for a stop.
    public func beginServing(events: EventSink, closeConnections: @escaping () -> Void,
                             stopRequested: @escaping () -> Void) throws -> ServingLoop {
        precondition(state == .started, "\(owner): serve before start, or twice")
        let serving = try ServingLoop(events: events)
        self.serving = serving
        self.closeConnections = closeConnections
        let handle = try AsyncHandle(loop: serving.loop, callback: stopRequested)
        let early = stopSwitch.withLock { state in
            state.handle = handle
            return state.requested
        }
        if early { handle.wake() }
        return serving
    }

    /// Runs `whenReady` (the service's handles), then `ready` (the server's
    /// ready line), then the loop until a stop.
    public func run(whenReady: (ServingLoop) throws -> Void, ready: () -> Void) throws {
        guard let serving else { preconditionFailure("\(owner): run before beginServing") }
        try whenReady(serving)
        ready()
        move(to: .serving)
        serving.run()
    }

    /// Any thread: the loop runs `stopRequested` on its next turn (at once
    /// when it serves, or as soon as it does).
    public func requestStop() {
        stopSwitch.withLock { state in
            state.requested = true
            state.handle?.wake()
        }
    }

    /// Loop thread: closes the server's connections and every handle, so
    /// the loop runs out; false when it was not serving.
    @discardableResult
    public func stop() -> Bool {
        guard state == .serving else { return false }
        move(to: .stopped)
        closeConnectionsAndHandles()
        return true
    }

    private func closeConnectionsAndHandles() {
        closeConnections()
        closeConnections = {}
        stopSwitch.withLock { state in
            state.handle?.close()
            state.handle = nil
        }
        serving?.closeHandles()
    }

    /// Tears down what serving left (after a stop, a failed serve, or
    /// none) and closes the loop; false when the server was closed already.
    /// The server then removes its files and calls `closed`.
    public func beginClosing() -> Bool {
        guard state != .closed else { return false }
        stop()
        if let serving {
            closeConnectionsAndHandles()
            serving.close()
            self.serving = nil
        }
        return true
    }

    public func closed() {
        move(to: .closed)
    }
}
