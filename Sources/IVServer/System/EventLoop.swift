import CLibUV
import CLinux
import Glibc
import LinuxSystem

// libuv ownership rule for this file: every handle is heap-allocated (libuv
// handles must not move), its Swift owner is retained in `handle.data` from
// init until libuv's close callback, and only that close callback releases
// the owner and frees the memory (LoopHandle does this for all but the child
// process). Callbacks are plain functions that recover the owner from `data`
// and forward. Everything runs on the loop's thread.

/// One libuv loop.
public final class EventLoop {
    let raw: UnsafeMutablePointer<uv_loop_t>

    public init() throws(UVError) {
        raw = .allocate(capacity: 1)
        let result = uv_loop_init(raw)
        if result != 0 {
            raw.deallocate()
            throw UVError(operation: "uv_loop_init", code: result)
        }
    }

    /// Runs until no active handle remains.
    public func run() {
        uv_run(raw, UV_RUN_DEFAULT)
    }

    /// Lets close callbacks run, then closes the loop. Every handle must
    /// have been closed before.
    public func close() {
        uv_run(raw, UV_RUN_DEFAULT)
        let result = uv_loop_close(raw)
        precondition(result == 0, "libuv loop closed with live handles: \(String(cString: uv_strerror(result)))")
        raw.deallocate()
    }
}

/// What every handle class below shares: the libuv handle, allocated on
/// the heap and initialised by the subclass's `uv_*_init`; the owner,
/// retained in `handle.data` until libuv's close callback; and closing once,
/// which drops the subclass's callback first (it usually captures the
/// handle's own owner).
public class LoopHandle {
    fileprivate let rawHandle: UnsafeMutableRawPointer
    public private(set) var isClosed = false

    fileprivate init<Handle>(
        loop: EventLoop, _ type: Handle.Type, operation: String,
        initialize: (UnsafeMutablePointer<uv_loop_t>, UnsafeMutablePointer<Handle>) -> Int32
    ) throws(UVError) {
        let handle = UnsafeMutablePointer<Handle>.allocate(capacity: 1)
        let result = initialize(loop.raw, handle)
        if result != 0 {
            handle.deallocate()
            throw UVError(operation: operation, code: result)
        }
        rawHandle = UnsafeMutableRawPointer(handle)
        rawHandle.assumingMemoryBound(to: uv_handle_t.self).pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    fileprivate func handle<Handle>(as type: Handle.Type) -> UnsafeMutablePointer<Handle> {
        rawHandle.assumingMemoryBound(to: type)
    }

    /// Stops the handle and releases it (once libuv has finished with it).
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        dropCallback()
        closeHandle(rawHandle.assumingMemoryBound(to: uv_handle_t.self))
    }

    /// Subclasses let go of their callback here.
    fileprivate func dropCallback() {}
}

/// Recovers the handle's owner in a libuv callback.
private func owner<Owner: LoopHandle, Handle>(_ handle: UnsafeMutablePointer<Handle>?, as type: Owner.Type) -> Owner? {
    guard let data = UnsafeMutableRawPointer(handle)?.assumingMemoryBound(to: uv_handle_t.self).pointee.data else { return nil }
    return Unmanaged<Owner>.fromOpaque(data).takeUnretainedValue()
}

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

    fileprivate override func dropCallback() { callback = nil }

    fileprivate func fire(status: Int32, events: Int32) {
        callback?(status, events)
    }
}

private func pollCallback(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    owner(handle, as: PollHandle.self)?.fire(status: status, events: events)
}

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

    fileprivate override func dropCallback() { callback = nil }

    fileprivate func fire() {
        callback?()
    }
}

private func timerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    owner(handle, as: TimerHandle.self)?.fire()
}

/// Runs a callback on every turn of the loop, just before it waits for
/// I/O (uv_prepare).
public final class PrepareHandle: LoopHandle {
    private var callback: (() -> Void)?

    public init(loop: EventLoop, callback: @escaping () -> Void) throws(UVError) {
        self.callback = callback
        try super.init(loop: loop, uv_prepare_t.self, operation: "uv_prepare_init") { uv_prepare_init($0, $1) }
        let result = uv_prepare_start(handle(as: uv_prepare_t.self), prepareCallback)
        if result != 0 {
            close()
            throw UVError(operation: "uv_prepare_start", code: result)
        }
    }

    fileprivate override func dropCallback() { callback = nil }

    fileprivate func fire() {
        callback?()
    }
}

private func prepareCallback(_ handle: UnsafeMutablePointer<uv_prepare_t>?) {
    owner(handle, as: PrepareHandle.self)?.fire()
}

/// Runs a callback on the loop's thread when another thread asks
/// (uv_async): the one call here that may come from any thread.
public final class AsyncHandle: LoopHandle, @unchecked Sendable {
    // @unchecked: `wake` only calls uv_async_send, which libuv makes safe
    // from any thread; everything else runs on the loop's thread.
    private var callback: (() -> Void)?

    public init(loop: EventLoop, callback: @escaping () -> Void) throws(UVError) {
        self.callback = callback
        try super.init(loop: loop, uv_async_t.self, operation: "uv_async_init") { uv_async_init($0, $1, asyncCallback) }
    }

    /// Any thread: runs the callback on the loop's thread soon (several
    /// wakes before it runs may run it once).
    public func wake() {
        uv_async_send(handle(as: uv_async_t.self))
    }

    fileprivate override func dropCallback() { callback = nil }

    fileprivate func fire() {
        callback?()
    }
}

private func asyncCallback(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    owner(handle, as: AsyncHandle.self)?.fire()
}

/// Runs a callback on the loop's thread when a signal arrives.
public final class SignalHandle: LoopHandle {
    private var callback: ((Int32) -> Void)?

    public init(loop: EventLoop, signal: Int32, callback: @escaping (Int32) -> Void) throws(UVError) {
        self.callback = callback
        try super.init(loop: loop, uv_signal_t.self, operation: "uv_signal_init") { uv_signal_init($0, $1) }
        // A blocked signal never reaches libuv's handler, and the mask is
        // inherited: a parent that blocks SIGTERM would make us unstoppable.
        unblockSignal(signal)
        let result = uv_signal_start(handle(as: uv_signal_t.self), signalCallback, signal)
        if result != 0 {
            close()
            throw UVError(operation: "uv_signal_start", code: result)
        }
    }

    fileprivate override func dropCallback() { callback = nil }

    fileprivate func fire(_ signal: Int32) {
        callback?(signal)
    }
}

private func signalCallback(_ handle: UnsafeMutablePointer<uv_signal_t>?, _ signal: Int32) {
    owner(handle, as: SignalHandle.self)?.fire(signal)
}

private func unblockSignal(_ signal: Int32) {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, signal)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

/// uv_close, with the one close callback that frees any handle kind.
private func closeHandle<Handle>(_ handle: UnsafeMutablePointer<Handle>) {
    let base = UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)
    uv_close(base) { base in
        guard let base else { return }
        if let owner = base.pointee.data {
            Unmanaged<AnyObject>.fromOpaque(owner).release()
        }
        // Allocated as the concrete handle type; freeing needs no type.
        UnsafeMutableRawPointer(base).deallocate()
    }
}

/// A child process started with uv_spawn (no shell): standard streams
/// inherited, nothing else (every other fd must be close-on-exec; see
/// `Reexec.closeInheritedDescriptorsOnExec`).
public final class ChildProcess {
    /// How the child ended: its exit code, or the signal that killed it.
    public enum Termination: Equatable, Sendable {
        case exited(Int32)
        case signalled(Int32)

        /// A shell's convention: the code, or 128 + the signal.
        public var shellStatus: Int32 {
            switch self {
            case let .exited(code): return code
            case let .signalled(signal): return 128 + signal
            }
        }
    }

    private let handle: UnsafeMutablePointer<uv_process_t>
    private var onExit: ((Termination) -> Void)?
    public private(set) var termination: Termination?
    public let pid: Int32

    /// Starts `arguments[0]` (searched in PATH) with `arguments`. With
    /// `environment` nil the child gets ours.
    public init(loop: EventLoop, arguments: [String], environment: [String]?, onExit: @escaping (Termination) -> Void) throws(UVError) {
        precondition(!arguments.isEmpty, "no command to start")
        // libuv learns of the child's exit through SIGCHLD; an inherited mask
        // that blocks it would leave the exit unnoticed forever.
        unblockSignal(SIGCHLD)
        let process = UnsafeMutablePointer<uv_process_t>.allocate(capacity: 1)
        process.initialize(to: uv_process_t())
        handle = process
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { $0.map { strdup($0) } + [nil] }
        defer {
            argv.forEach { free($0) }
            envp?.forEach { free($0) }
        }
        var stdio = (0..<3).map { fd -> uv_stdio_container_t in
            var container = uv_stdio_container_t()
            container.flags = UV_INHERIT_FD
            container.data.fd = Int32(fd)
            return container
        }
        var options = uv_process_options_t()
        options.exit_cb = processExitCallback
        let result: Int32 = argv.withUnsafeBufferPointer { argvBuffer in
            stdio.withUnsafeMutableBufferPointer { stdioBuffer in
                options.file = argvBuffer[0].map { UnsafePointer($0) }
                options.args = UnsafeMutablePointer(mutating: argvBuffer.baseAddress)
                options.stdio_count = 3
                options.stdio = stdioBuffer.baseAddress
                if let envp {
                    return envp.withUnsafeBufferPointer { envBuffer in
                        options.env = UnsafeMutablePointer(mutating: envBuffer.baseAddress)
                        return uv_spawn(loop.raw, process, &options)
                    }
                }
                return uv_spawn(loop.raw, process, &options)
            }
        }
        guard result == 0 else {
            // libuv initialised the handle even on failure: it must be closed.
            self.pid = 0
            closeHandle(process)
            throw UVError(operation: "start \(arguments[0])", code: result)
        }
        self.pid = process.pointee.pid
        self.onExit = onExit
        process.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Sends `signal` unless the child has already ended.
    public func signal(_ signal: Int32) {
        guard termination == nil else { return }
        uv_process_kill(handle, signal)
    }

    fileprivate func exited(status: Int64, signal: Int32) {
        termination = signal != 0 ? .signalled(signal) : .exited(Int32(truncatingIfNeeded: status))
        let callback = onExit
        onExit = nil
        closeHandle(handle)
        if let termination { callback?(termination) }
    }

    /// Exit codes a shell uses when a command cannot be run.
    public static func shellStatus(forSpawnError code: Int32) -> Int32 {
        code == UV_ENOENT.rawValue ? 127 : 126
    }
}

/// The VM process of `ivserver launch`, whether this image started it or an
/// earlier image of this process did (before SIGUSR2's re-exec).
public protocol LaunchedProcess: AnyObject {
    var pid: Int32 { get }
    var termination: ChildProcess.Termination? { get }
    func signal(_ signal: Int32)
}

extension ChildProcess: LaunchedProcess {}

/// A child that an earlier image of this process started: this image's
/// libuv does not know it, so its exit is seen through a pidfd (readable
/// once it ends) and it is reaped with waitpid.
public final class InheritedChild: LaunchedProcess {
    public let pid: Int32
    public private(set) var termination: ChildProcess.Termination?
    private let pidfd: OwnedFD
    private var poll: PollHandle?
    private var onExit: ((ChildProcess.Termination) -> Void)?

    public init(loop: EventLoop, pid: Int32, onExit: @escaping (ChildProcess.Termination) -> Void) throws {
        let raw = ivs_pidfd_open(pid)
        guard raw >= 0 else { throw SystemError(.pidfdOpen, "pidfd_open of the VM", "(pid \(pid))") }
        self.pid = pid
        pidfd = OwnedFD(taking: raw)
        self.onExit = onExit
        poll = try PollHandle(loop: loop, fd: raw) { [unowned self] _, _ in self.reap() }
        poll?.watch(readable: true, writable: false)
        reap()  // it may have ended already
    }

    public func signal(_ signal: Int32) {
        guard termination == nil else { return }
        kill(pid, signal)
    }

    private func reap() {
        var status: Int32 = 0
        guard termination == nil, waitpid(pid, &status, WNOHANG) == pid else { return }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, spelled out (they are macros)
        termination = status & 0x7F == 0 ? .exited((status >> 8) & 0xFF) : .signalled(status & 0x7F)
        poll?.close()
        poll = nil
        pidfd.close()
        let callback = onExit
        onExit = nil
        if let termination { callback?(termination) }
    }
}

private func processExitCallback(_ handle: UnsafeMutablePointer<uv_process_t>?, _ status: Int64, _ signal: Int32) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<ChildProcess>.fromOpaque(data).takeUnretainedValue().exited(status: status, signal: signal)
}
