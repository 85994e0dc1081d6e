/// Who holds the host clients' pending (undecided) handshakes, and whose
/// share a new one comes out of, so that one process or one user that
/// opens connections and sends nothing cannot lock every other client out.
/// Pure bookkeeping: the server closes what `admit` names.
///
/// The rule, checked in this order for a new connection from process P of
/// user U:
/// 1. P already holds `perProcess`: the new connection is refused (closed
///    at once, before anything is sent): P is over its share, and turning it
///    away costs the server least (a process that reconnects in a loop
///    otherwise keeps it busy);
/// 2. U already holds `perUser`: the oldest pending connection of U's
///    process that holds the most is closed;
/// 3. `total` are pending: the oldest of the process that holds the most,
///    within the user that holds the most, is closed.
/// So the connection closed always belongs to whoever is over their share,
/// and a newcomer within its share is always let in.
public struct PendingShares {
    public struct Limits: Equatable, Sendable {
        public var perProcess: Int
        public var perUser: Int
        public var total: Int
    }

    /// Whose share was full.
    public enum Cap: Equatable, Sendable {
        case process, user, total
    }

    enum Admission: Equatable {
        case admit
        /// Close the new connection at once: its process is at its cap.
        case refuse
        /// Close the pending connection `victim` (of process `pid`, user
        /// `uid`), then admit: `cap` was full.
        case admitAfterClosing(victim: Int, pid: Int32, uid: UInt32, cap: Cap)
    }

    let limits: Limits
    /// Each process's pending connections, oldest first (ids the caller chooses).
    private var byProcess: [Int32: [Int]] = [:]
    /// Each process's user.
    private var userOfProcess: [Int32: UInt32] = [:]
    private var byUser: [UInt32: Int] = [:]
    private(set) var total = 0

    init(limits: Limits) {
        precondition(limits.perProcess >= 1 && limits.perUser >= 1 && limits.total >= 1)
        self.limits = limits
    }

    func count(process pid: Int32) -> Int { byProcess[pid]?.count ?? 0 }
    func count(user uid: UInt32) -> Int { byUser[uid] ?? 0 }

    /// What to do with a new connection from `pid` of `uid`.
    func admit(pid: Int32, uid: UInt32) -> Admission {
        if let own = byProcess[pid], own.count >= limits.perProcess { return .refuse }
        if count(user: uid) >= limits.perUser, let (heaviest, oldest) = heaviestProcess(of: uid) {
            return .admitAfterClosing(victim: oldest, pid: heaviest, uid: uid, cap: .user)
        }
        if total >= limits.total, let user = byUser.max(by: { $0.value < $1.value })?.key,
           let (heaviest, oldest) = heaviestProcess(of: user) {
            return .admitAfterClosing(victim: oldest, pid: heaviest, uid: user, cap: .total)
        }
        return .admit
    }

    private func heaviestProcess(of uid: UInt32) -> (pid: Int32, oldest: Int)? {
        var best: (pid: Int32, connections: [Int])?
        for (pid, connections) in byProcess where userOfProcess[pid] == uid {
            if connections.count > (best?.connections.count ?? 0) { best = (pid, connections) }
        }
        return best.map { ($0.pid, $0.connections[0]) }
    }

    mutating func add(_ id: Int, pid: Int32, uid: UInt32) {
        byProcess[pid, default: []].append(id)
        userOfProcess[pid] = uid
        byUser[uid, default: 0] += 1
        total += 1
    }

    /// Forgets `id` (decided or closed); false when it was not pending.
    @discardableResult
    mutating func remove(_ id: Int, pid: Int32) -> Bool {
        guard var own = byProcess[pid], let index = own.firstIndex(of: id), let uid = userOfProcess[pid] else { return false }
        own.remove(at: index)
        if own.isEmpty {
            byProcess[pid] = nil
            userOfProcess[pid] = nil
        } else {
            byProcess[pid] = own
        }
        byUser[uid]! -= 1
        if byUser[uid] == 0 { byUser[uid] = nil }
        total -= 1
        return true
    }
}
