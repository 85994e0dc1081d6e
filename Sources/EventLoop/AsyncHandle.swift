import CLibUV
import CLinux
import Glibc
import LinuxSystem

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

    override func dropCallback() { callback = nil }

    func fire() {
        callback?()
    }
}

private func asyncCallback(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    owner(handle, as: AsyncHandle.self)?.fire()
}
