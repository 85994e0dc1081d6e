import EventLoop

/// What a server serves on: one libuv loop, the readiness set every socket
/// is watched through, and the turn hook that runs before the loop waits
/// (the log is flushed there, so lines of one turn go out together).
public final class ServingLoop {
    public let loop: EventLoop
    package let readiness: ReadinessSet
    private var beforeWaiting: PrepareHandle?
    private var turnHooks: [() -> Void] = []
    /// Handles of the service around the server (signals, timers), closed
    /// with the loop's own.
    private var attached: [LoopHandle] = []

    /// A loop whose every turn ends with `events` flushed.
    public init(events: EventSink) throws {
        loop = try EventLoop()
        readiness = try ReadinessSet(loop: loop)
        beforeWaiting = try PrepareHandle(loop: loop) { [unowned self] in
            for hook in self.turnHooks { hook() }
            events.flush()
        }
    }

    /// Runs `hook` on every turn, before the log is flushed and the loop waits.
    public func onEachTurn(_ hook: @escaping () -> Void) {
        turnHooks.append(hook)
    }

    /// Keeps `handle` until the server stops: then it is closed with the rest.
    public func attach(_ handle: LoopHandle) {
        attached.append(handle)
    }

    /// Runs until no handle is left.
    public func run() {
        loop.run()
    }

    /// Closes the loop's own handles (the caller closed its sockets first),
    /// so that `run` returns.
    public func closeHandles() {
        turnHooks = []
        attached.forEach { $0.close() }
        attached = []
        beforeWaiting?.close()
        beforeWaiting = nil
        readiness.close()
    }

    /// After `run`: lets close callbacks run and frees the loop.
    public func close() {
        closeHandles()
        loop.close()
    }
}
