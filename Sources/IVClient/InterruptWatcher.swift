import LinuxSystem
import CLinux
import Glibc

/// Observes guest interrupts on several regions without consuming them: an
/// edge-triggered epoll on each region's guest_to_host eventfd reports every
/// ring, while the counter stays for the region's own client to read. Rings
/// that arrive between two `next` calls on one region are reported once.
public final class InterruptWatcher {
    private let connections: [RegionConnection]
    private let epoll: OwnedFD

    public init(connections: [RegionConnection]) throws(IVClientError) {
        self.connections = connections
        let socketPath = connections.first?.socketPath ?? RegionConnection.defaultSocketPath
        let raw = ivs_epoll_create()
        guard raw >= 0 else { throw IVClientError(.system(operation: "epoll_create1", errno: errno), socketPath: socketPath, region: nil) }
        epoll = OwnedFD(taking: raw)
        for (index, connection) in connections.enumerated() {
            guard ivs_epoll_add_readable_edge(raw, connection.guestToHost.rawValue, UInt64(index)) == 0 else {
                throw connection.error(.system(operation: "epoll_ctl", errno: errno))
            }
        }
        // Registering reports counters that were already non-zero: those
        // rings happened before the watch began.
        _ = try next(timeout: .zero)
    }

    /// The regions rung since the last call (indices into `connections`, in
    /// order), waiting up to `timeout` (nil: forever) for one; empty on
    /// timeout.
    public func next(timeout: Duration?) throws(IVClientError) -> [Int] {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var tokens = [UInt64](repeating: 0, count: Int(IVS_EPOLL_BATCH))
        while true {
            let count = ivs_epoll_wait_tokens(epoll.rawValue, &tokens, Int32(tokens.count), Syscall.milliseconds(until: deadline))
            if count >= 0 { return Set(tokens[..<Int(count)].map { Int($0) }).sorted() }
            if errno != EINTR {
                throw IVClientError(.system(operation: "epoll_wait", errno: errno),
                                    socketPath: connections.first?.socketPath ?? "", region: nil)
            }
        }
    }
}
