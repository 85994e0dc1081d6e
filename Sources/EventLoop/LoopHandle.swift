import CLibUV
import CLinux
import Glibc
import LinuxSystem

/// What every handle class below shares: the libuv handle, allocated on
/// the heap and initialised by the subclass's `uv_*_init`; the owner,
/// retained in `handle.data` until libuv's close callback; and closing once,
/// which drops the subclass's callback first (it usually captures the
/// handle's own owner).
public class LoopHandle {
    let rawHandle: UnsafeMutableRawPointer
    public private(set) var isClosed = false

    init<Handle>(
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

    func handle<Handle>(as type: Handle.Type) -> UnsafeMutablePointer<Handle> {
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
    func dropCallback() {}
}

/// Recovers the handle's owner in a libuv callback.
func owner<Owner: LoopHandle, Handle>(_ handle: UnsafeMutablePointer<Handle>?, as type: Owner.Type) -> Owner? {
    guard let data = UnsafeMutableRawPointer(handle)?.assumingMemoryBound(to: uv_handle_t.self).pointee.data else { return nil }
    return Unmanaged<Owner>.fromOpaque(data).takeUnretainedValue()
}

/// uv_close, with the one close callback that frees any handle kind.
func closeHandle<Handle>(_ handle: UnsafeMutablePointer<Handle>) {
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
