import Glibc
import Synchronization

/// The system layer's test seam: a test scripts what the next calls of a
/// named operation ("accept", "sendmsg", "size shared memory (ftruncate)",
/// … as SystemError names them) do, call by call: go through, or fail with
/// a chosen errno without being made. So the server's handling of ENOSPC,
/// EMFILE or EAGAIN is exercised without making the system run out.
///
/// Only calls made on an enrolled thread (the in-process server's) follow
/// the script: the test's own clients use the same system layer, and must
/// not take a fault meant for the server. Outside tests nothing is planned
/// and each call costs one atomic load.
package enum InjectedFaults {
    /// What one call does.
    package enum Outcome: Equatable, Sendable {
        /// The call is made as usual.
        case pass
        /// The call is not made; it fails with this errno.
        case fail(Int32)
    }

    private struct Plan {
        var outcomes: [String: [Outcome]] = [:]
        /// Calls of each operation that met the script, on enrolled threads.
        var calls: [String: Int] = [:]
        var threads: Set<pthread_t> = []
    }

    private static let armed = Atomic<Bool>(false)
    private static let plan = Mutex(Plan())

    /// Calls made on the current thread follow the script from now on.
    package static func enrollCurrentThread() {
        plan.withLock { _ = $0.threads.insert(pthread_self()) }
    }

    /// The next calls of `operation` on enrolled threads do what
    /// `outcomes` says, one each, in order; later calls pass.
    package static func script(_ operation: String, _ outcomes: [Outcome]) {
        plan.withLock { $0.outcomes[operation, default: []] += outcomes }
        armed.store(true, ordering: .releasing)
    }

    /// The next `count` calls of `operation` on enrolled threads fail with `errno`.
    package static func fail(_ operation: String, with errno: Int32, times count: Int = 1) {
        script(operation, Array(repeating: .fail(errno), count: count))
    }

    /// Forgets every script, count and enrolled thread.
    package static func clear() {
        plan.withLock { $0 = Plan() }
        armed.store(false, ordering: .releasing)
    }

    /// How many calls of `operation` enrolled threads made since the
    /// script was armed (those that passed too).
    package static func calls(_ operation: String) -> Int {
        plan.withLock { $0.calls[operation] ?? 0 }
    }

    /// Outcomes of `operation` scripted and not yet met.
    package static func remaining(_ operation: String) -> [Outcome] {
        plan.withLock { $0.outcomes[operation] ?? [] }
    }

    /// The errno this call of `operation` is to fail with, if the script says so.
    package static func take(_ operation: String) -> Int32? {
        guard armed.load(ordering: .acquiring) else { return nil }
        return plan.withLock { plan in
            guard plan.threads.contains(pthread_self()) else { return nil }
            plan.calls[operation, default: 0] += 1
            guard var outcomes = plan.outcomes[operation], !outcomes.isEmpty else { return nil }
            let outcome = outcomes.removeFirst()
            plan.outcomes[operation] = outcomes.isEmpty ? nil : outcomes
            if case let .fail(errno) = outcome { return errno }
            return nil
        }
    }
}
