import CLibUV
import CLinux
import Glibc
import LinuxSystem

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

    override func dropCallback() { callback = nil }

    func fire(_ signal: Int32) {
        callback?(signal)
    }
}

private func signalCallback(_ handle: UnsafeMutablePointer<uv_signal_t>?, _ signal: Int32) {
    owner(handle, as: SignalHandle.self)?.fire(signal)
}

func unblockSignal(_ signal: Int32) {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, signal)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}
