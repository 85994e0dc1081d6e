import LinuxSystem
import Glibc

/// Observes guest interrupts on several regions without consuming them: an
/// edge-triggered epoll on each region's guest_to_host eventfd reports every
/// ring, while the counter stays for the region's own client to read. Rings
/// that arrive between two `next` calls on one region are reported once.
public final class InterruptWatcher {
    private let connections: [RegionConnection]
    private let epoll: Epoll

    public init(connections: [RegionConnection]) throws(IVClientError) {
        self.connections = connections
        do {
            epoll = try Epoll()
            for (index, connection) in connections.enumerated() {
                try epoll.add(connection.guestToHost.rawValue, events: [.input, .edgeTriggered], token: UInt64(index))
            }
        } catch {
            throw IVClientError(.system(error),
                                socketPath: connections.first?.socketPath ?? RegionConnection.defaultSocketPath, region: nil)
        }
        // Registering reports counters that were already non-zero: those
        // rings happened before the watch began.
        _ = try next(timeout: .zero)
    }

    /// The regions rung since the last call (indices into `connections`, in
    /// order), waiting up to `timeout` (nil: forever) for one; empty on
    /// timeout.
    public func next(timeout: Duration?) throws(IVClientError) -> [Int] {
        var rung: Set<Int> = []
        do {
            try epoll.wait(timeout: timeout) { token, _ in rung.insert(Int(token)) }
        } catch {
            throw IVClientError(.system(error),
                                socketPath: connections.first?.socketPath ?? "", region: nil)
        }
        return rung.sorted()
    }
}
