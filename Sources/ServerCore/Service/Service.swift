import EventLoop
import Glibc
import LinuxSystem

/// What a server is to the service that runs it: both servers have this
/// one lifecycle (`ServingControl`), and forward to it alike (below).
public protocol Servable: AnyObject {
    /// The server's lifecycle and loop.
    var control: ServingControl { get }

    /// What `systemctl status` shows, as cheap values compared on every
    /// turn of the loop; the line is built only when they changed.
    associatedtype Status: Equatable

    /// Makes everything that can fail with a clear message (the lock, the
    /// memory, the listening sockets), and nothing that needs a loop.
    func start() throws
    /// Builds the loop and serves until stopped. `whenReady` runs once the
    /// loop exists, before the `ready` line (so that nobody who saw that
    /// line can signal the process before it handles signals).
    func serve(whenReady: (ServingLoop) throws -> Void) throws
    /// After `serve` or a failed `start`: removes what `start` made.
    func close()

    /// Whether a stop leaves the files to the next server process (a
    /// store keeps their fds): said when stopping.
    var handsOverFiles: Bool { get }
    var status: Status { get }
    func statusLine(_ status: Status) -> String
    /// The whole state, a line each (SIGUSR1, `ivctl status`).
    func stateLines() -> [String]
}

/// The one service shape both servers run in: start, go to the background
/// when asked, serve with the stop signals (SIGINT, SIGTERM, SIGHUP) and
/// SIGUSR1 (the state in the log) handled, READY=1 and a STATUS= kept
/// current for the service manager, and close.
public final class Service<Served: Servable> {
    public let server: Served
    private let events: EventSink
    private var loop: ServingLoop?
    /// What a stop signal does; by default the server stops. (`ivserver
    /// launch` passes it on to its VM first.)
    public var onStopSignal: ((Int32) -> Void)?

    // STATUS=, at most once a second, only when it changed; the timer
    // (armed only then) sends a change that came sooner.
    private var statusTimer: TimerHandle?
    private var published: Served.Status?
    private var publishedAt: UInt64?

    public init(server: Served, events: EventSink) {
        self.server = server
        self.events = events
    }

    /// Starts; with `background`, goes to the background (after the
    /// files are made, before any loop: the starting process exits with
    /// how start-up ended); serves until a stop; closes. `whenReady` runs
    /// on the loop before READY=1, for what a service adds. Throws only
    /// while starting, with whatever was made removed again.
    public func run(background: (detach: Bool, pidFile: String?)? = nil,
                    whenReady extra: (ServingLoop) throws -> Void = { _ in }) throws {
        defer { events.flush() }
        try server.start()
        // Going to the background as QEMU's ivshmem-server does without
        // -F, with an honest exit status: after the files are made, before
        // any loop or thread exists; the starting process waits until this
        // one serves (exit 0) or has failed (its status). The pid file is
        // written by the process that serves, and goes when it stops.
        var pidFile: PidFile?
        defer {
            server.close()
            pidFile?.remove()
        }
        let parent = background?.detach == true ? try Daemon.detach() : nil
        pidFile = try background?.pidFile.map(PidFile.init(path:))
        try server.serve { loop in
            self.loop = loop
            try install(on: loop)
            try extra(loop)
            ServiceManager.notifyReady()
            parent?.ready()
        }
        loop = nil
    }

    /// Runs `handler` on the loop when `signal` arrives (from `whenReady`).
    public func handle(_ signal: Int32, _ handler: @escaping (Int32) -> Void) throws {
        guard let loop else { preconditionFailure("signal handles come with the loop") }
        loop.attach(try SignalHandle(loop: loop.loop, signal: signal, callback: handler))
    }

    private func install(on loop: ServingLoop) throws {
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            try handle(signal) { [unowned self] signal in
                if let onStopSignal = self.onStopSignal {
                    onStopSignal(signal)
                } else {
                    self.stop(signal: signal)
                }
            }
        }
        try handle(SIGUSR1) { [unowned self] _ in
            for line in self.server.stateLines() { self.events.record(CoreEvent.state(line)) }
        }
        if ServiceManager.isPresent {
            let timer = try TimerHandle(loop: loop.loop) { [unowned self] in self.publishStatusIfChanged() }
            loop.attach(timer)
            statusTimer = timer
            loop.onEachTurn { [unowned self] in self.publishStatusIfChanged() }
        }
    }

    /// Stops the server as a stop signal does (0: asked, not signalled).
    public func stop(signal: Int32) {
        events.record(CoreEvent.stopping(signal: signal, handingOver: server.handsOverFiles))
        server.stop()
    }

    /// Keeps `systemctl status` current: sends STATUS= when it changed, at
    /// most once a second (the timer sends a change that came sooner).
    private func publishStatusIfChanged() {
        guard let timer = statusTimer, !timer.isClosed else { return }
        let current = server.status
        if let published, published == current { return }
        let now = timer.now
        if let last = publishedAt, now < last + 1000 {
            timer.arm(milliseconds: last + 1000 - now)
            return
        }
        ServiceManager.notify("STATUS=" + server.statusLine(current))
        published = current
        publishedAt = now
    }
}

/// The forwarding both servers share, written once.
extension Servable {
    /// Any thread: stops the server as SIGTERM would (`serve` then
    /// returns); asked before it serves, it stops as soon as it does.
    public func requestStop() {
        control.requestStop()
    }

    /// Closes the listeners, the connections and the handles; the loop
    /// then runs out of work and `serve` returns. Loop thread only.
    public func stop() {
        control.stop()
    }
}
