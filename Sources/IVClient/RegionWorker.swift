import Glibc
import LinuxSystem
import Synchronization

/// A thread that serves a region's incoming signals, like the original
/// RegionWorker: it waits for the guest's interrupts and runs
/// `processSignals(handler)` after each, until `stop()`. Stopping is prompt:
/// the thread waits on the guest's eventfd and on a stop eventfd together.
///
/// While a worker runs, it takes the region's interrupts: do not also call
/// `waitForGuest` on the same region. The thread keeps the worker alive
/// until `stop()`. A round trip that finds the host_to_guest table full is
/// retried until a slot is free, never dropped, while the worker goes on
/// serving (the guest was interrupted to drain the table); any other error
/// ends the thread and is thrown by `stop()`.
public final class RegionWorker: Sendable {
    private let connection: RegionConnection
    private let handler: @Sendable (UInt32) -> Void
    private let stopFD: OwnedFD
    private let thread = Mutex<pthread_t?>(nil)
    private let failure = Mutex<IVClientError?>(nil)

    /// Starts the thread; it first handles anything already queued.
    public init(connection: RegionConnection, handler: @escaping @Sendable (UInt32) -> Void) throws(IVClientError) {
        self.connection = connection
        self.handler = handler
        do {
            stopFD = try EventFD.create()
        } catch {
            throw connection.error(.system(SystemError(error.call, "eventfd for the worker's stop signal", errno: error.errno)))
        }
        var created = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&created, nil, { context in
            let worker = Unmanaged<RegionWorker>.fromOpaque(context!).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<RegionWorker>.fromOpaque(context).release()
            throw connection.error(.system(SystemError(.threadCreate, "pthread_create for the region worker", errno: result)))
        }
        thread.withLock { $0 = created }
    }

    /// Stops the thread and waits for it; the error that ended it early, if
    /// any, is thrown. Safe to call more than once.
    public func stop() throws(IVClientError) {
        // A write to our own eventfd cannot fail but for a bug of ours.
        try? EventFD.signal(stopFD)
        let running = thread.withLock { value -> pthread_t? in
            defer { value = nil }
            return value
        }
        if let running, pthread_equal(running, pthread_self()) == 0 {
            pthread_join(running, nil)
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    private func run() {
        do throws(IVClientError) {
            try serveSignals()
            var entries = [
                pollfd(fd: connection.guestToHost.rawValue, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopFD.rawValue, events: Int16(POLLIN), revents: 0),
            ]
            // While echoes wait for a free slot in the host_to_guest table,
            // the wait is short and growing, and its end retries them; the
            // guest's new signals are served meanwhile.
            var backoff = RetryBackoff()
            while true {
                let waiting = connection.pendingEchoCount > 0
                let ready: Int
                do {
                    ready = try Posix.poll(&entries, timeout: waiting ? backoff.advance() : nil)
                } catch {
                    throw connection.error(error, "poll in the region worker")
                }
                if entries[1].revents != 0 { return }
                if entries[0].revents != 0 {
                    do {
                        _ = try EventFD.take(connection.guestToHost)
                    } catch {
                        throw connection.error(error, "read of the guest_to_host eventfd")
                    }
                    try serveSignals()
                } else if ready == 0, waiting, try connection.sendPendingEchoes() {
                    backoff.reset()
                }
                if connection.pendingEchoCount == 0 { backoff.reset() }
            }
        } catch {
            failure.withLock { $0 = error }
        }
    }
}

extension RegionWorker {
    /// Handles the queued signals; echoes the host_to_guest table cannot
    /// take now stay queued on the connection for the loop to retry.
    private func serveSignals() throws(IVClientError) {
        do throws(IVClientError) {
            try connection.processSignals(echoTimeout: .zero, handler)
        } catch where error.kind.isSignalTableFull {
            // every entry was handled; the echoes wait in the connection
        }
    }
}

extension RegionConnection {
    /// Starts a `RegionWorker` for this region.
    public func startWorker(handler: @escaping @Sendable (UInt32) -> Void) throws(IVClientError) -> RegionWorker {
        try RegionWorker(connection: self, handler: handler)
    }
}
