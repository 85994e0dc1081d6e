import Synchronization

/// The system layer's test seam: a test plans that the next calls of a
/// named operation ("accept", "sendmsg", "size shared memory (ftruncate)",
/// … as SystemError names them) fail with a chosen errno, and the server's
/// handling of ENOSPC, EMFILE or EAGAIN is exercised without having to
/// make the system run out. Outside tests nothing is planned and each call
/// costs one atomic load.
package enum InjectedFaults {
    private static let armed = Atomic<Bool>(false)
    private static let plan = Mutex<[String: [Int32]]>([:])

    /// The next `count` calls of `operation` fail with `errno` (the system
    /// call is not made).
    package static func fail(_ operation: String, with errno: Int32, times count: Int = 1) {
        plan.withLock { $0[operation, default: []] += Array(repeating: errno, count: count) }
        armed.store(true, ordering: .releasing)
    }

    package static func clear() {
        plan.withLock { $0.removeAll() }
        armed.store(false, ordering: .releasing)
    }

    /// The errno this call of `operation` is to fail with, if one is planned.
    package static func take(_ operation: String) -> Int32? {
        guard armed.load(ordering: .acquiring) else { return nil }
        return plan.withLock { plan in
            guard var errnos = plan[operation], !errnos.isEmpty else { return nil }
            let errno = errnos.removeFirst()
            plan[operation] = errnos.isEmpty ? nil : errnos
            return errno
        }
    }
}
