import CLibUV
import CLinux
import Glibc
import LinuxSystem

/// A child process started with uv_spawn (no shell): standard streams
/// inherited, nothing else (every other fd must be close-on-exec; see
/// `Reexec.closeInheritedDescriptorsOnExec`).
public final class ChildProcess {
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
        let argv = CStringArray(arguments)
        let envp = environment.map(CStringArray.init)
        var stdio = (0..<3).map { fd -> uv_stdio_container_t in
            var container = uv_stdio_container_t()
            container.flags = UV_INHERIT_FD
            container.data.fd = Int32(fd)
            return container
        }
        var options = uv_process_options_t()
        options.exit_cb = processExitCallback
        let result: Int32 = stdio.withUnsafeMutableBufferPointer { stdioBuffer in
            options.file = UnsafePointer(argv.pointers[0])
            options.args = argv.pointers
            options.env = envp?.pointers
            options.stdio_count = 3
            options.stdio = stdioBuffer.baseAddress
            // The arrays live until after the spawn.
            return withExtendedLifetime((argv, envp)) { uv_spawn(loop.raw, process, &options) }
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

    func exited(status: Int64, signal: Int32) {
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
    var termination: Termination? { get }
    func signal(_ signal: Int32)
}

extension ChildProcess: LaunchedProcess {}

private func processExitCallback(_ handle: UnsafeMutablePointer<uv_process_t>?, _ status: Int64, _ signal: Int32) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<ChildProcess>.fromOpaque(data).takeUnretainedValue().exited(status: status, signal: signal)
}
