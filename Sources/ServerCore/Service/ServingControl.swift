/// What both servers' lifecycles share: the state (`Lifecycle`), the
/// switch another thread stops them with, and the loop they serve on,
/// built, run, stopped and closed the same way. The server says what is
/// its own: what it closes when it stops (listeners, connections), and
/// what it removes when it closes (its files).
public final class ServingControl {
    public private(set) var lifecycle: Lifecycle
    private let stopSwitch = StopSwitch()
    public private(set) var serving: ServingLoop?
    private var closeConnections: () -> Void = {}

    public init(of owner: String) {
        lifecycle = Lifecycle(of: owner)
    }

    public var state: Lifecycle.State { lifecycle.state }

    /// `start` succeeded.
    public func started() {
        lifecycle.move(to: .started)
    }

    /// Builds the loop to serve on. `closeConnections` closes the server's
    /// listeners and connections (a stop, or a close after a failed serve);
    /// `stopRequested` runs on the loop when another thread asks for a stop.
    public func beginServing(events: EventSink, closeConnections: @escaping () -> Void,
                             stopRequested: @escaping () -> Void) throws -> ServingLoop {
        precondition(lifecycle.state == .started, "serve before start, or twice")
        let serving = try ServingLoop(events: events)
        self.serving = serving
        self.closeConnections = closeConnections
        try stopSwitch.arm(on: serving.loop, stopRequested)
        return serving
    }

    /// Runs `whenReady` (the service's handles), then `ready` (the server's
    /// ready line), then the loop until a stop.
    public func run(whenReady: (ServingLoop) throws -> Void, ready: () -> Void) throws {
        guard let serving else { preconditionFailure("run before beginServing") }
        try whenReady(serving)
        ready()
        lifecycle.move(to: .serving)
        serving.run()
    }

    /// Any thread.
    public func requestStop() {
        stopSwitch.request()
    }

    /// Loop thread: closes the server's connections and every handle, so
    /// the loop runs out; false when it was not serving.
    @discardableResult
    public func stop() -> Bool {
        guard lifecycle.state == .serving else { return false }
        lifecycle.move(to: .stopped)
        closeConnectionsAndHandles()
        return true
    }

    private func closeConnectionsAndHandles() {
        closeConnections()
        closeConnections = {}
        stopSwitch.disarm()
        serving?.closeHandles()
    }

    /// Tears down what serving left (after a stop, a failed serve, or
    /// none) and closes the loop; false when the server was closed already.
    /// The server then removes its files and calls `closed`.
    public func beginClosing() -> Bool {
        guard lifecycle.state != .closed else { return false }
        stop()
        if let serving {
            closeConnectionsAndHandles()
            serving.close()
            self.serving = nil
        }
        return true
    }

    public func closed() {
        lifecycle.move(to: .closed)
    }
}
