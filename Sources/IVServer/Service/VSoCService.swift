import ServerCore
import EventLoop
import Glibc
import LinuxSystem

/// ivserver as a service: the vSoC server (`VSoCServer`) in ServerCore's one service
/// shape (the stop signals, SIGUSR1's state dump, READY=1 and STATUS=),
/// plus what the vSoC mode adds: SIGUSR2 (execute the binary again in
/// place, handing everything over) and the VM that `launch` starts (or
/// that a re-exec hands over) and supervises, to which stop signals go
/// first.
public final class VSoCService {
    public let server: VSoCServer
    private let service: Service<VSoCServer>
    private let events: EventSink
    private var configuration: VSoCServerConfiguration { server.configuration }
    // `ivserver launch`: the VM we started, and the timer that kills it
    // when it ignores a stop signal.
    private var launchedVM: (any LaunchedProcess)?
    private var vmStopTimer: TimerHandle?
    private var vmStopTimerArmed = false
    private var serving: ServingLoop?

    /// The VM process a re-exec handed over (`ivserver launch`'s).
    private let handedVM: Int32?

    /// `handover`: what was handed to this process (`Handover.Source.fromEnvironment()`).
    public init(configuration: VSoCServerConfiguration, events: EventSink, handover: Handover.Source) {
        self.events = events
        handedVM = handover.vmProcess
        server = VSoCServer(configuration: configuration, events: events, handover: handover)
        service = Service(server: server, events: events)
    }

    private func report(_ event: VSoCEvent) { events.record(event) }

    /// Runs until a stop signal or, with `launching`, until the VM it starts
    /// once both sockets listen has exited; returns how the VM ended. Throws
    /// (StartupError, SystemError, UVError, HandoverError, LaunchError) only
    /// while starting; whatever was made by then is removed first.
    @discardableResult
    public func run(launching launch: LaunchSpec? = nil) throws -> Termination? {
        // Under `launch`, after a re-exec: the VM is already our child.
        let handedChild = launch == nil ? nil : handedVM
        if let launch { service.onStopSignal = { [unowned self] signal in self.stop(signal: signal, launch: launch) } }
        try service.run { serving in
            self.serving = serving
            try self.service.handle(SIGUSR2) { [unowned self] _ in self.reexecute() }
            if let handedChild {
                try self.watchVM(handedChild, serving: serving)
            } else if let launch {
                try self.startVM(launch, serving: serving)
            }
        }
        serving = nil
        return launchedVM?.termination
    }

    private func stop(signal: Int32, launch: LaunchSpec) {
        guard let vm = launchedVM, vm.termination == nil else {
            service.stop(signal: signal)
            return
        }
        // The VM goes first; we follow when it exits.
        report(.vmSignalled(pid: vm.pid, signal: signal, timeoutMilliseconds: launch.stopTimeoutMilliseconds))
        vm.signal(signal)
        // Armed at the first stop signal; a second one does not push the deadline back.
        if !vmStopTimerArmed {
            vmStopTimerArmed = true
            vmStopTimer?.arm(milliseconds: launch.stopTimeoutMilliseconds)
        }
    }

    /// The timer that kills a VM that ignores a stop signal, made with the
    /// VM (a failure then stops the start), so that a stop never finds it missing.
    private func makeVMStopTimer(serving: ServingLoop) throws {
        let timer = try TimerHandle(loop: serving.loop) { [unowned self] in
            guard let vm = self.launchedVM, vm.termination == nil else { return }
            self.report(.vmKilled(pid: vm.pid))
            vm.signal(SIGKILL)
        }
        serving.attach(timer)
        vmStopTimer = timer
    }

    // MARK: the VM of `launch`

    private func startVM(_ launch: LaunchSpec, serving: ServingLoop) throws {
        try makeVMStopTimer(serving: serving)
        Reexec.closeInheritedDescriptorsOnExec()
        let arguments = launch.arguments + configuration.qemuArguments
        do {
            let vm = try ChildProcess(loop: serving.loop, arguments: arguments, environment: launch.environment) { [unowned self] termination in
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
    private func watchVM(_ pid: Int32, serving: ServingLoop) throws {
        try makeVMStopTimer(serving: serving)
        launchedVM = try InheritedChild(loop: serving.loop, pid: pid) { [unowned self] termination in
            self.report(.vmExited(pid: pid, termination: termination))
            self.server.stop()
        }
        report(.vmWatched(pid: pid))
    }

    // MARK: outliving this process

    /// SIGUSR2: a planned restart or upgrade without a service manager. The
    /// process execs the binary now at its path (same pid, same arguments),
    /// handing the new image the memory, the eventfds, both listeners and
    /// the VM's connection, which it takes over as after a systemd restart.
    /// If the exec fails, this image keeps serving with everything as it was.
    private func reexecute() {
        let fds = server.handoverList(includingVM: true)
        report(.reexecuting)
        events.flush()
        // Under `launch` the VM stays this process's child across the exec.
        let child = launchedVM.flatMap { $0.termination == nil ? $0.pid : nil }
        let failure = Reexec.execute(handing: fds, child: child)
        report(.reexecFailed(reason: failure.errnoText))
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

