import CLibUV
import Glibc

// libuv ownership rule for this file: every handle is heap-allocated (libuv
// handles must not move), its Swift owner is retained in `handle.data` from
// init until libuv's close callback, and only that close callback releases
// the owner and frees the memory. Callbacks are plain functions that recover
// the owner from `data` and forward. Everything runs on the loop's thread.

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

/// Watches a file descriptor for readability/writability (level-triggered).
/// The fd stays owned by the caller, who must close the handle before the fd.
public final class PollHandle {
    public typealias Callback = (_ status: Int32, _ events: Int32) -> Void
    public static let readableEvent = Int32(UV_READABLE.rawValue)
    public static let writableEvent = Int32(UV_WRITABLE.rawValue)

    private let handle: UnsafeMutablePointer<uv_poll_t>
    private var callback: Callback?
    private var watching: Int32 = 0
    public private(set) var isClosed = false

    public init(loop: EventLoop, fd: Int32, callback: @escaping Callback) throws(UVError) {
        handle = .allocate(capacity: 1)
        let result = uv_poll_init(loop.raw, handle, fd)
        if result != 0 {
            handle.deallocate()
            throw UVError(operation: "uv_poll_init", code: result)
        }
        self.callback = callback
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Watches for the given events; a no-op when they are already watched.
    public func watch(readable: Bool, writable: Bool) {
        precondition(!isClosed, "poll handle used after close")
        let events = (readable ? Self.readableEvent : 0) | (writable ? Self.writableEvent : 0)
        guard events != watching else { return }
        watching = events
        if events == 0 {
            uv_poll_stop(handle)
        } else {
            uv_poll_start(handle, events, pollCallback)
        }
    }

    /// Stops watching and releases the handle (once libuv has finished with it).
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        callback = nil  // breaks the cycle owner -> handle -> closure -> owner
        closeHandle(handle)
    }

    fileprivate func fire(status: Int32, events: Int32) {
        callback?(status, events)
    }
}

private func pollCallback(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<PollHandle>.fromOpaque(data).takeUnretainedValue().fire(status: status, events: events)
}

/// A one-shot timer on the loop (uv_timer). Only armed while needed.
public final class TimerHandle {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var callback: (() -> Void)?
    public private(set) var isClosed = false

    public init(loop: EventLoop, callback: @escaping () -> Void) throws(UVError) {
        handle = .allocate(capacity: 1)
        let result = uv_timer_init(loop.raw, handle)
        if result != 0 {
            handle.deallocate()
            throw UVError(operation: "uv_timer_init", code: result)
        }
        self.callback = callback
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Fires once after `milliseconds`, replacing any earlier arming.
    public func arm(milliseconds: UInt64) {
        precondition(!isClosed, "timer used after close")
        uv_timer_start(handle, timerCallback, milliseconds, 0)
    }

    public func disarm() {
        guard !isClosed else { return }
        uv_timer_stop(handle)
    }

    /// The loop's cached clock, in milliseconds.
    public var now: UInt64 { uv_now(handle.pointee.loop) }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        callback = nil
        closeHandle(handle)
    }

    fileprivate func fire() {
        callback?()
    }
}

private func timerCallback(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<TimerHandle>.fromOpaque(data).takeUnretainedValue().fire()
}

/// Runs a callback on the loop's thread when a signal arrives.
public final class SignalHandle {
    private let handle: UnsafeMutablePointer<uv_signal_t>
    private var callback: ((Int32) -> Void)?
    public private(set) var isClosed = false

    public init(loop: EventLoop, signal: Int32, callback: @escaping (Int32) -> Void) throws(UVError) {
        handle = .allocate(capacity: 1)
        var result = uv_signal_init(loop.raw, handle)
        if result != 0 {
            handle.deallocate()
            throw UVError(operation: "uv_signal_init", code: result)
        }
        self.callback = callback
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        // A blocked signal never reaches libuv's handler, and the mask is
        // inherited: a parent that blocks SIGTERM would make us unstoppable.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        result = uv_signal_start(handle, signalCallback, signal)
        if result != 0 {
            close()
            throw UVError(operation: "uv_signal_start", code: result)
        }
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        callback = nil
        closeHandle(handle)
    }

    fileprivate func fire(_ signal: Int32) {
        callback?(signal)
    }
}

private func signalCallback(_ handle: UnsafeMutablePointer<uv_signal_t>?, _ signal: Int32) {
    guard let data = handle?.pointee.data else { return }
    Unmanaged<SignalHandle>.fromOpaque(data).takeUnretainedValue().fire(signal)
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
