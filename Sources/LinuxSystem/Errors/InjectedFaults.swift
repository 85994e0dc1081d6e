import Glibc
import Synchronization

/// The system layer's test seam: a test scripts what the next calls of a
/// system call (`SystemCall`: .accept, .sendmsg, .ftruncate, …) do, call
/// by call: go through, or fail with a chosen errno without being made. So the server's handling of ENOSPC,
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
        var outcomes: [SystemCall: [Outcome]] = [:]
        /// Calls of each operation that met the script, on enrolled threads.
        var calls: [SystemCall: Int] = [:]
        var threads: Set<pthread_t> = []
    }

    private static let armed = Atomic<Bool>(false)
    private static let plan = Mutex(Plan())

    /// Calls made on the current thread follow the script from now on.
    package static func enrollCurrentThread() {
        plan.withLock { _ = $0.threads.insert(pthread_self()) }
    }

    /// The next calls of `call` on enrolled threads do what
    /// `outcomes` says, one each, in order; later calls pass.
    package static func script(_ call: SystemCall, _ outcomes: [Outcome]) {
        plan.withLock { $0.outcomes[call, default: []] += outcomes }
        armed.store(true, ordering: .releasing)
    }

    /// The next `count` calls of `call` on enrolled threads fail with `errno`.
    package static func fail(_ call: SystemCall, with errno: Int32, times count: Int = 1) {
        script(call, Array(repeating: .fail(errno), count: count))
    }

    /// Forgets every script, count and enrolled thread.
    package static func clear() {
        plan.withLock { $0 = Plan() }
        armed.store(false, ordering: .releasing)
    }

    /// How many calls of `call` enrolled threads made since the
    /// script was armed (those that passed too).
    package static func calls(_ call: SystemCall) -> Int {
        plan.withLock { $0.calls[call] ?? 0 }
    }

    /// Outcomes of `call` scripted and not yet met.
    package static func remaining(_ call: SystemCall) -> [Outcome] {
        plan.withLock { $0.outcomes[call] ?? [] }
    }

    /// The errno this call of `call` is to fail with, if the script says so.
    package static func take(_ call: SystemCall) -> Int32? {
        guard armed.load(ordering: .acquiring) else { return nil }
        return plan.withLock { plan in
            guard plan.threads.contains(pthread_self()) else { return nil }
            plan.calls[call, default: 0] += 1
            guard var outcomes = plan.outcomes[call], !outcomes.isEmpty else { return nil }
            let outcome = outcomes.removeFirst()
            plan.outcomes[call] = outcomes.isEmpty ? nil : outcomes
            if case let .fail(errno) = outcome { return errno }
            return nil
        }
    }
}
