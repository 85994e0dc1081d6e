import ServerCore
import EventLoop
import Glibc
import LinuxSystem

/// ivserver as a service: the protocol `Server` plus what the executable
/// adds around it. The stop signals (SIGINT, SIGTERM, SIGHUP; under
/// `launch` they go to the VM first), SIGUSR1 (the state in the log) and
/// SIGUSR2 (execute the binary again in place); the service manager:
/// READY=1, STATUS= (at most once a second), the fd store, and the fds it
/// hands back after a restart; and the VM that `launch` starts (or that a
/// re-exec hands over) and supervises.
public final class ServerService {
    public let server: Server
    private var events: EventSink { server.events }
    private var configuration: ServerConfiguration { server.configuration }

    private var signals: [SignalHandle] = []
    // The service manager's STATUS=, at most once a second, only when it
    // changed; the timer (armed only then) sends a change that came sooner.
    private var statusTimer: TimerHandle?
    /// What the published line says (VM pid, served, refused): compared
    /// each turn instead of the line, which is built only when it changed.
    private var publishedStatus: (vm: Int32?, served: Int, refused: Int)?
    private var statusPublishedAt: UInt64?
    /// The service manager keeps our fds: on stop the files stay for the
    /// next server process of this VM.
    private var handingOver = false
    // `ivserver launch`: the VM we started, and the timer that kills it
    // when it ignores a stop signal.
    private var launchedVM: (any LaunchedProcess)?
    private var vmStopTimer: TimerHandle?

    public init(configuration: ServerConfiguration, events: EventSink) {
        server = Server(configuration: configuration, events: events)
    }

    private func report(_ event: VSoCEvent) { events.record(event) }
    private func report(_ event: CoreEvent) { events.record(event) }

    /// Runs until a stop signal or, with `launching`, until the VM it starts
    /// once both sockets listen has exited; returns how the VM ended. Throws
    /// (StartupError, SystemError, UVError, ResumeError, LaunchError) only
    /// while starting; whatever was created by then is removed first.
    @discardableResult
    public func run(launching launch: LaunchSpec? = nil) throws -> Termination? {
        defer { events.flush() }
        // Under `launch`, after a re-exec: the VM is already our child.
        let handedChild = launch == nil ? nil : Reexec.takeHandedChild()
        // A previous server process of this VM may have left what the VM
        // holds in the service manager's store: then it is taken over.
        var inherited = false
        let plan = configuration.layout
        let sharedMemoryPath = configuration.sharedMemoryPath
        try server.start(inheriting: {
            let inheritance = try Inheritance.take(from: ServiceManager.takeHandedDescriptors(), plan: plan,
                                                   sharedMemoryPath: sharedMemoryPath)
            inherited = inheritance != nil
            return inheritance
        }, beforeReady: { loop in try self.installHandles(loop: loop, launch: launch) })
        // The files stay at their paths while the service manager keeps the
        // fds, for the next server process of this VM.
        var filesOutliveUs = inherited && ServiceManager.isPresent
        defer {
            closeHandles()
            server.close(keepingFiles: filesOutliveUs)
        }
        guard let loop = server.loop else { preconditionFailure("started without a loop") }
        if storeWithServiceManager(inherited: inherited) { filesOutliveUs = true }
        handingOver = filesOutliveUs
        ServiceManager.notifyReady()
        if let handedChild {
            try watchVM(handedChild, loop: loop)
        } else if let launch {
            try startVM(launch, loop: loop)
        }
        server.serve()
        return launchedVM?.termination
    }

    /// The signal handles, the status timer and the server's hooks, before
    /// the server says it is ready.
    private func installHandles(loop: EventLoop, launch: LaunchSpec?) throws {
        server.onStop = { [unowned self] in self.closeHandles() }
        if ServiceManager.isPresent {
            statusTimer = try TimerHandle(loop: loop) { [unowned self] in self.publishStatusIfChanged() }
            server.onTurn = { [unowned self] in self.publishStatusIfChanged() }
            // While attached, the VM's connection outlives this process in the store.
            server.onVMAttached = { [unowned self] vm in
                let failed = vm.withDescriptor { ServiceManager.store([(StoredName.vm, $0)]) } ?? []
                for name in failed { self.report(.storeFailed(name: name)) }
            }
            server.onVMDetached = { ServiceManager.removeStored(name: StoredName.vm) }
        }
        signals.append(try SignalHandle(loop: loop, signal: SIGUSR1) { [unowned self] _ in
            for line in self.server.stateLines() { self.report(.state(line)) }
        })
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signals.append(try SignalHandle(loop: loop, signal: signal) { [unowned self] signal in
                self.stop(signal: signal, launch: launch)
            })
        }
        signals.append(try SignalHandle(loop: loop, signal: SIGUSR2) { [unowned self] _ in self.reexecute() })
    }

    private func closeHandles() {
        statusTimer?.close()
        statusTimer = nil
        vmStopTimer?.close()
        vmStopTimer = nil
        signals.forEach { $0.close() }
        signals = []
    }

    private func stop(signal: Int32, launch: LaunchSpec?) {
        guard let vm = launchedVM, vm.termination == nil, let launch else {
            report(.stopping(signal: signal, handingOver: handingOver))
            server.stop()
            return
        }
        // The VM goes first; we follow when it exits.
        report(.vmSignalled(pid: vm.pid, signal: signal, timeoutMilliseconds: launch.stopTimeoutMilliseconds))
        vm.signal(signal)
        if vmStopTimer == nil, let loop = server.loop {
            vmStopTimer = try? TimerHandle(loop: loop) { [unowned self] in
                guard let vm = self.launchedVM, vm.termination == nil else { return }
                self.report(.vmKilled(pid: vm.pid))
                vm.signal(SIGKILL)
            }
            vmStopTimer?.arm(milliseconds: launch.stopTimeoutMilliseconds)
        }
    }

    // MARK: the VM of `launch`

    private func startVM(_ launch: LaunchSpec, loop: EventLoop) throws {
        Reexec.closeInheritedDescriptorsOnExec()
        let arguments = launch.arguments + configuration.qemuArguments
        do {
            let vm = try ChildProcess(loop: loop, arguments: arguments, environment: launch.environment) { [unowned self] termination in
                if let pid = self.launchedVM?.pid { self.report(.vmExited(pid: pid, termination: termination)) }
                self.server.stop()
            }
            launchedVM = vm
            report(.vmLaunched(pid: vm.pid, command: arguments))
        } catch {
            throw LaunchError(command: launch.arguments[0], reason: error.description, shellStatus: ChildProcess.shellStatus(forSpawnError: error.code))
        }
    }

    /// The VM the image before a re-exec started: watched on until it ends.
    private func watchVM(_ pid: Int32, loop: EventLoop) throws {
        launchedVM = try InheritedChild(loop: loop, pid: pid) { [unowned self] termination in
            self.report(.vmExited(pid: pid, termination: termination))
            self.server.stop()
        }
        report(.vmWatched(pid: pid))
    }

    // MARK: what operators see

    /// "VM pid 4242 attached since 12:01:07 UTC; 37 clients served, 1 refused"
    private func statusLine(_ resources: ServedResources) -> String {
        let vmPart = server.vm.map { vm in
            "VM pid \(vm.peer.map { String($0.pid) } ?? "?") attached since \(Server.clockTime(vm.attachedSince)) UTC"
        } ?? "no VM attached"
        return "\(vmPart); \(resources.served.reduce(0, +)) clients served, \(resources.refused + server.peersRefused) refused"
    }

    /// Keeps `systemctl status` current: sends STATUS= when the line
    /// changed, at most once a second (the timer sends a change that came
    /// sooner). Without a service manager nothing is built.
    private func publishStatusIfChanged() {
        guard let timer = statusTimer, let resources = server.resources else { return }
        let current = (vm: server.vm.map { $0.peer?.pid ?? 0 }, served: resources.served.reduce(0, +),
                       refused: resources.refused + server.peersRefused)
        if let published = publishedStatus, published == current { return }
        let now = timer.now
        if let last = statusPublishedAt, now < last + 1000 {
            timer.arm(milliseconds: last + 1000 - now)
            return
        }
        ServiceManager.notify("STATUS=" + statusLine(resources))
        publishedStatus = current
        statusPublishedAt = now
    }

    // MARK: outliving this process

    /// SIGUSR2: a planned restart or upgrade without a service manager. The
    /// process execs the binary now at its path (same pid, same arguments),
    /// handing the new image the memory, the eventfds, both listeners and
    /// the VM's connection, which it takes over as after a systemd restart.
    /// If the exec fails, this image keeps serving with everything as it was.
    private func reexecute() {
        var fds = server.handOverList()
        if let vm = server.vm?.withDescriptor({ (StoredName.vm, $0) }) { fds.append(vm) }
        report(.reexecuting)
        events.flush()
        // Under `launch` the VM stays this process's child across the exec.
        let child = launchedVM.flatMap { $0.termination == nil ? $0.pid : nil }
        let failure = Reexec.execute(handing: fds, child: child)
        report(.reexecFailed(reason: failure.errnoText))
    }

    /// Puts what the VM holds (memory, eventfds) and both listening sockets
    /// in the service manager's fd store, so that they outlive this process;
    /// false without a service manager. What was handed back is in the store
    /// already; only a listener made anew replaces its stored one.
    private func storeWithServiceManager(inherited: Bool) -> Bool {
        guard ServiceManager.isPresent else { return false }
        var stored = server.handOverList()
        if inherited {
            // Only a listener made anew (or handed back under an earlier
            // version's name) goes in, in place of the one it replaces.
            let changed = server.listeners.filter { $0.handedName != $0.storedName }
            for name in changed.compactMap(\.handedName) { ServiceManager.removeStored(name: name) }
            let names = Set(changed.map(\.storedName))
            stored = stored.filter { names.contains($0.name) }
        }
        let failed = ServiceManager.store(stored)
        for name in failed { report(.storeFailed(name: name)) }
        return failed.isEmpty
    }
}

/// What `ivserver launch` starts: the VM's command (the ivshmem options are
/// appended) and how long it gets to stop.
public struct LaunchSpec: Sendable {
    public var arguments: [String]
    /// Full environment ("NAME=value"); nil to pass ours on.
    public var environment: [String]?
    public var stopTimeoutMilliseconds: UInt64

    public init(arguments: [String], environment: [String]? = nil, stopTimeoutMilliseconds: UInt64 = 10_000) {
        self.arguments = arguments
        self.environment = environment
        self.stopTimeoutMilliseconds = stopTimeoutMilliseconds
    }
}

/// The VM's command could not be started; `shellStatus` is 127 (not found)
/// or 126 (not executable), as a shell would say.
public struct LaunchError: Error, CustomStringConvertible {
    public var command: String
    public var reason: String
    public var shellStatus: Int32

    public var description: String { "cannot start the VM: \(reason)" }
}

