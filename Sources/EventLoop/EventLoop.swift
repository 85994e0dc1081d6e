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
