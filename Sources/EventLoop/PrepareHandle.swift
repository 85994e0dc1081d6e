import CLibUV
import CLinux
import Glibc
import LinuxSystem

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

    override func dropCallback() { callback = nil }

    func fire() {
        callback?()
    }
}

private func prepareCallback(_ handle: UnsafeMutablePointer<uv_prepare_t>?) {
    owner(handle, as: PrepareHandle.self)?.fire()
}
