/// The shares of pending handshakes (see PendingShares).
public struct PendingLimits: Equatable, Sendable {
    public var perProcess: Int
    public var perUser: Int
    public var total: Int

    public init(perProcess: Int, perUser: Int, total: Int) {
        self.perProcess = perProcess
        self.perUser = perUser
        self.total = total
    }
}

/// Whose share was full.
public enum PendingCap: Equatable, Sendable {
    case process, user, total
}


/// Who holds the host clients' pending (undecided) handshakes, and who
/// makes room when there is none, so that one process or one user that
/// opens connections and sends nothing cannot lock every other client out,
/// while a client that is alone is never held back. Pure bookkeeping: the
/// server closes, holds or greets what `admit` says.
///
/// The shares are a rule for dividing scarce room, not a quota. For a new
/// connection from process P of user U:
/// 1. fewer than `total` are pending: it is admitted, whatever P and U
///    hold (the server has room, so nobody waits for a share);
/// 2. the server is full and P holds `perProcess` or more: it waits
///    (`hold`), as P is over its share; it is greeted when room opens
///    beyond a small `reserve` kept for newcomers, in turn with every other
///    connection that waits;
/// 3. the server is full and U holds `perUser` or more: U's busiest
///    process gives up its oldest, unless that is P (or P holds as many):
///    then it waits likewise;
/// 4. the server is full and the newcomer is within both shares: the
///    oldest pending connection of the busiest process over its share
///    (else of the busiest user over its share, else of the busiest user)
///    is closed to make room for it.
/// So a connection closed always belongs to whoever holds the most, and a
/// newcomer within its share is always let in.
///
/// Its methods are `@inlinable`: a generic type of this module would
/// otherwise run unspecialized in the server's (a module boundary), at
/// thousands of instructions per connection.
public struct PendingShares<ID: Equatable> {
    @usableFromInline package enum Admission: Equatable {
        case admit
        /// Keep the new connection waiting until there is room: its process
        /// (`cap` .process) or its user (.user) is over its share and the
        /// server is full.
        case hold(cap: PendingCap)
        /// Close the pending connection `victim` (of process `pid`, user
        /// `uid`), then admit: the server is full, and `cap` says whose
        /// share the victim's owner is over (.total: nobody's, it holds the most).
        case admitAfterClosing(victim: ID, pid: Int32, uid: UInt32, cap: PendingCap)
    }

    @usableFromInline package let limits: PendingLimits
    /// Each process's pending connections, oldest first (what the caller
    /// knows them by: the connections themselves, in the server).
    @usableFromInline var byProcess: [Int32: [ID]] = [:]
    /// Each process's user.
    @usableFromInline var userOfProcess: [Int32: UInt32] = [:]
    @usableFromInline var byUser: [UInt32: Int] = [:]
    @usableFromInline package internal(set) var total = 0

    package init(limits: PendingLimits) {
        precondition(limits.perProcess >= 1 && limits.perUser >= 1 && limits.total >= 1)
        self.limits = limits
    }

    @inlinable package func count(process pid: Int32) -> Int { byProcess[pid]?.count ?? 0 }
    @inlinable package func count(user uid: UInt32) -> Int { byUser[uid] ?? 0 }

    /// Whether a connection could be admitted without anyone making room.
    @inlinable package var hasRoom: Bool { total < limits.total }

    /// Slots kept free for newcomers while connections wait: 1/16 of the
    /// total, at most a process's share (none below 16 in all). A process
    /// that reopens whatever is closed otherwise keeps the server full, so
    /// that every newcomer within its share closes one of its connections,
    /// and each greeted waiting one fills the server again.
    @inlinable package var reserve: Int { min(limits.perProcess, limits.total / 16) }

    /// Whether a waiting connection may be greeted now: room beyond the reserve.
    @inlinable package var hasRoomForWaiting: Bool { total < limits.total - reserve }

    /// What to do with a new connection from `pid` of `uid`.
    @inlinable package func admit(pid: Int32, uid: UInt32) -> Admission {
        if hasRoom { return .admit }
        if count(process: pid) >= limits.perProcess { return .hold(cap: .process) }
        if count(user: uid) >= limits.perUser {
            guard let (process, oldest) = busiestProcess(where: { userOfProcess[$0] == uid }),
                  count(process: process) > count(process: pid)
            else { return .hold(cap: .user) }
            return .admitAfterClosing(victim: oldest, pid: process, uid: uid, cap: .user)
        }
        if let (process, oldest) = busiestProcess(where: { count(process: $0) > limits.perProcess }) {
            return .admitAfterClosing(victim: oldest, pid: process, uid: userOfProcess[process]!, cap: .process)
        }
        if let user = busiestUser(where: { count(user: $0) > limits.perUser }),
           let (process, oldest) = busiestProcess(where: { userOfProcess[$0] == user }) {
            return .admitAfterClosing(victim: oldest, pid: process, uid: user, cap: .user)
        }
        if let user = busiestUser(where: { _ in true }), let (process, oldest) = busiestProcess(where: { userOfProcess[$0] == user }) {
            return .admitAfterClosing(victim: oldest, pid: process, uid: user, cap: .total)
        }
        return .admit  // unreachable: a full server holds someone's connections
    }

    /// The process holding the most pending connections among those that
    /// `include`, and its oldest; the lowest pid on a tie, so the choice
    /// does not depend on the dictionary's order.
    @inlinable func busiestProcess(where include: (Int32) -> Bool) -> (pid: Int32, oldest: ID)? {
        var best: (pid: Int32, connections: [ID])?
        for (pid, connections) in byProcess where include(pid) {
            if let current = best, connections.count < current.connections.count
                || (connections.count == current.connections.count && pid > current.pid) { continue }
            best = (pid, connections)
        }
        return best.map { ($0.pid, $0.connections[0]) }
    }

    @inlinable func busiestUser(where include: (UInt32) -> Bool) -> UInt32? {
        var best: (uid: UInt32, count: Int)?
        for (uid, count) in byUser where include(uid) {
            if let current = best, count < current.count || (count == current.count && uid > current.uid) { continue }
            best = (uid, count)
        }
        return best?.uid
    }

    @inlinable package mutating func add(_ id: ID, pid: Int32, uid: UInt32) {
        byProcess[pid, default: []].append(id)
        userOfProcess[pid] = uid
        byUser[uid, default: 0] += 1
        total += 1
    }

    /// Forgets `id` (decided or closed); false when it was not pending.
    @discardableResult
    @inlinable package mutating func remove(_ id: ID, pid: Int32) -> Bool {
        guard let index = byProcess[pid]?.firstIndex(of: id), let uid = userOfProcess[pid] else { return false }
        // In place: a copy of the process's list per removal made a burst
        // of N connections cost N² to decide.
        byProcess[pid]!.remove(at: index)
        if byProcess[pid]!.isEmpty {
            byProcess[pid] = nil
            userOfProcess[pid] = nil
        }
        byUser[uid]! -= 1
        if byUser[uid] == 0 { byUser[uid] = nil }
        total -= 1
        return true
    }
}
