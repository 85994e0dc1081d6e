import Testing
@testable import IVServer

@Suite("Shares of pending handshakes")
struct PendingSharesTests {
    let limits = PendingShares.Limits(perProcess: 3, perUser: 5, total: 8)

    @Test("within every share a newcomer is admitted; the counts follow adds and removes")
    func admits() {
        var shares = PendingShares(limits: limits)
        for id in 0..<3 {
            #expect(shares.admit(pid: 10, uid: 1) == .admit)
            shares.add(id, pid: 10, uid: 1)
        }
        #expect(shares.count(process: 10) == 3 && shares.count(user: 1) == 3 && shares.total == 3)
        let removed = shares.remove(1, pid: 10)
        let again = shares.remove(1, pid: 10)
        let unknown = shares.remove(0, pid: 99)
        #expect(removed)
        #expect(!again, "removed once only")
        #expect(!unknown, "an unknown process")
        #expect(shares.count(process: 10) == 2 && shares.count(user: 1) == 2 && shares.total == 2)
        #expect(shares.admit(pid: 10, uid: 1) == .admit)
    }

    @Test("a process at its cap is turned away; another of the same user is not")
    func processCap() {
        var shares = PendingShares(limits: limits)
        for id in [7, 8, 9] { shares.add(id, pid: 10, uid: 1) }
        #expect(shares.admit(pid: 10, uid: 1) == .refuse)
        #expect(shares.admit(pid: 11, uid: 1) == .admit, "another process of the same user is within its share")
        shares.remove(7, pid: 10)
        #expect(shares.admit(pid: 10, uid: 1) == .admit, "back under its cap")
    }

    @Test("a user at its cap: the oldest connection of its busiest process makes room")
    func userCap() {
        var shares = PendingShares(limits: limits)
        shares.add(1, pid: 10, uid: 1)
        for id in [2, 3, 4] { shares.add(id, pid: 11, uid: 1) }
        shares.add(5, pid: 12, uid: 1)
        shares.add(6, pid: 30, uid: 2)
        #expect(shares.admit(pid: 13, uid: 1) == .admitAfterClosing(victim: 2, pid: 11, uid: 1, cap: .user))
        #expect(shares.admit(pid: 31, uid: 2) == .admit, "another user is within its share")
    }

    @Test("at the total cap, the busiest process of the busiest user makes room, not the newcomer")
    func totalCap() {
        var shares = PendingShares(limits: limits)
        shares.add(1, pid: 10, uid: 1)
        shares.add(2, pid: 20, uid: 2)
        shares.add(3, pid: 21, uid: 2)
        for id in [4, 5, 6] { shares.add(id, pid: 30, uid: 3) }
        shares.add(7, pid: 31, uid: 3)
        shares.add(8, pid: 40, uid: 4)
        #expect(shares.total == 8)
        #expect(shares.admit(pid: 50, uid: 5) == .admitAfterClosing(victim: 4, pid: 30, uid: 3, cap: .total))
    }
}
