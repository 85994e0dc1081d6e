import WireFormat
import LinuxSystem
@testable import ServerCore
import Testing
@testable import IVServer

@Suite("Shares of pending handshakes")
struct PendingSharesTests {
    let limits = PendingLimits(perProcess: 3, perUser: 5, total: 8)

    @Test("while the server has room every newcomer is admitted, whatever its process and user hold; the counts follow")
    func workConserving() {
        var shares = PendingShares<Int>(limits: limits)
        for id in 0..<7 {
            #expect(shares.admit(pid: 10, uid: 1) == .admit, "connection \(id) of a process alone")
            shares.add(id, pid: 10, uid: 1)
        }
        #expect(shares.count(process: 10) == 7 && shares.count(user: 1) == 7 && shares.total == 7)
        #expect(shares.hasRoom)
        let removed = shares.remove(1, pid: 10)
        let again = shares.remove(1, pid: 10)
        let unknown = shares.remove(0, pid: 99)
        #expect(removed)
        #expect(!again, "removed once only")
        #expect(!unknown, "an unknown process")
        #expect(shares.count(process: 10) == 6 && shares.count(user: 1) == 6 && shares.total == 6)
    }

    @Test("a full server: a process at or over its share waits; another process of the same user, within both shares, gets room")
    func processShare() {
        var shares = PendingShares<Int>(limits: limits)
        for id in 0..<3 { shares.add(id, pid: 10, uid: 1) }
        for id in 3..<8 { shares.add(id, pid: 20 + Int32(id), uid: UInt32(id)) }
        #expect(!shares.hasRoom)
        #expect(shares.admit(pid: 10, uid: 1) == .hold(cap: .process))
        // Process 11 of user 1 is within its share, and so is user 1 (3 of 5).
        if case .admitAfterClosing = shares.admit(pid: 11, uid: 1) {} else { Issue.record("a newcomer within its shares waits") }
        shares.remove(0, pid: 10)
        #expect(shares.admit(pid: 10, uid: 1) == .admit, "room again: admitted")
    }

    @Test("a full server and a user at its share: its busiest process gives up its oldest, unless the newcomer's is the busiest: then it waits")
    func userShare() {
        var shares = PendingShares<Int>(limits: limits)
        shares.add(1, pid: 10, uid: 1)
        for id in [2, 3] { shares.add(id, pid: 11, uid: 1) }
        for id in [4, 5] { shares.add(id, pid: 12, uid: 1) }
        for id in [6, 7, 8] { shares.add(id, pid: 30, uid: 2) }
        #expect(!shares.hasRoom && shares.count(user: 1) == 5)
        #expect(shares.admit(pid: 13, uid: 1) == .admitAfterClosing(victim: 2, pid: 11, uid: 1, cap: .user),
                "a process of the user that holds nothing: the user's busiest (lower pid of two) makes room")
        #expect(shares.admit(pid: 10, uid: 1) == .admitAfterClosing(victim: 2, pid: 11, uid: 1, cap: .user))
        #expect(shares.admit(pid: 11, uid: 1) == .hold(cap: .user), "the user's busiest itself waits")
        // User 2 is within its share; nobody is over one: the busiest user's
        // busiest process (the lower pid of two with 2) makes room.
        #expect(shares.admit(pid: 31, uid: 2) == .admitAfterClosing(victim: 2, pid: 11, uid: 1, cap: .total))
    }

    @Test("a full server and a newcomer within its shares: the busiest process over its share gives up its oldest")
    func processOverShareMakesRoom() {
        var shares = PendingShares<Int>(limits: limits)
        // Process 10 went over its share while there was room.
        for id in [1, 2, 3, 4, 5] { shares.add(id, pid: 10, uid: 1) }
        shares.add(6, pid: 20, uid: 2)
        shares.add(7, pid: 21, uid: 2)
        shares.add(8, pid: 30, uid: 3)
        #expect(shares.admit(pid: 40, uid: 4) == .admitAfterClosing(victim: 1, pid: 10, uid: 1, cap: .process))
        #expect(shares.admit(pid: 10, uid: 1) == .hold(cap: .process), "and its own newcomer waits")
    }

    @Test("a full server, no process over its share: the busiest user over its share gives up the oldest of its busiest process")
    func userOverShareMakesRoom() {
        var shares = PendingShares<Int>(limits: limits)
        for id in [1, 2] { shares.add(id, pid: 10, uid: 1) }
        for id in [3, 4] { shares.add(id, pid: 11, uid: 1) }
        for id in [5, 6, 7] { shares.add(id, pid: 12, uid: 1) }
        shares.add(8, pid: 20, uid: 2)
        #expect(shares.count(user: 1) == 7)
        #expect(shares.admit(pid: 30, uid: 3) == .admitAfterClosing(victim: 5, pid: 12, uid: 1, cap: .user))
    }

    @Test("a full server where nobody is over a share: the busiest process of the busiest user makes room, not the newcomer")
    func totalMakesRoom() {
        var shares = PendingShares<Int>(limits: limits)
        shares.add(1, pid: 10, uid: 1)
        shares.add(2, pid: 20, uid: 2)
        shares.add(3, pid: 21, uid: 2)
        for id in [4, 5, 6] { shares.add(id, pid: 30, uid: 3) }
        shares.add(7, pid: 31, uid: 3)
        shares.add(8, pid: 40, uid: 4)
        #expect(shares.total == 8)
        #expect(shares.admit(pid: 50, uid: 5) == .admitAfterClosing(victim: 4, pid: 30, uid: 3, cap: .total))
    }

    @Test("held connections are greeted oldest first, across processes, as room opens, and only while there is room")
    func heldGreetedInTurn() {
        var shares = PendingShares<Int>(limits: PendingLimits(perProcess: 2, perUser: 8, total: 3))
        let held = HeldConnections<String>(capacity: 10)
        for (id, pid) in [(1, Int32(10)), (2, 10), (3, 11)] { shares.add(id, pid: pid, uid: 1) }
        // The server is full; these four wait (as the server holds them).
        for (name, pid) in [("a", Int32(10)), ("b", 12), ("c", 10), ("d", 13)] {
            #expect(held.append(.init(payload: name, pid: pid, deadline: 100)) == nil)
        }
        #expect(held.count == 4 && held.count(process: 10) == 2)
        var greeted: [String] = []
        var nextID = 100
        func greet(_ entry: HeldConnections<String>.Entry) {
            greeted.append(entry.payload)
            shares.add(nextID, pid: entry.pid, uid: 1)
            nextID += 1
        }
        held.greetInTurn(while: { shares.hasRoom }, greet)
        #expect(greeted.isEmpty, "no room, nobody greeted")
        shares.remove(1, pid: 10)
        held.greetInTurn(while: { shares.hasRoom }, greet)
        #expect(greeted == ["a"], "one slot opened: the oldest takes it")
        shares.remove(2, pid: 10)
        shares.remove(3, pid: 11)
        held.greetInTurn(while: { shares.hasRoom }, greet)
        #expect(greeted == ["a", "b", "c"], "two slots: the next two in turn, whatever their process")
        #expect(held.count == 1 && held.oldest?.payload == "d")
    }

    @Test("waiting connections leave a reserve for newcomers: 1/16 of the total, at most a process's share")
    func reserveForNewcomers() {
        #expect(PendingShares<Int>(limits: PendingLimits(perProcess: 64, perUser: 256, total: 1024)).reserve == 64)
        #expect(PendingShares<Int>(limits: PendingLimits(perProcess: 64, perUser: 256, total: 100)).reserve == 6)
        #expect(PendingShares<Int>(limits: PendingLimits(perProcess: 2, perUser: 8, total: 100)).reserve == 2)
        #expect(PendingShares<Int>(limits: PendingLimits(perProcess: 64, perUser: 256, total: 15)).reserve == 0, "none when small")
        #expect(PendingShares<Int>(limits: PendingLimits(perProcess: 1, perUser: 1, total: 1)).hasRoomForWaiting, "never starved")
        var shares = PendingShares<Int>(limits: PendingLimits(perProcess: 4, perUser: 8, total: 32))
        #expect(shares.reserve == 2)
        for id in 0..<29 { shares.add(id, pid: 10, uid: 1) }
        #expect(shares.hasRoomForWaiting, "29 of 32: a waiting one may come in")
        shares.add(29, pid: 10, uid: 1)
        #expect(!shares.hasRoomForWaiting && shares.hasRoom, "30 of 32: the last two are kept for newcomers")
        #expect(shares.admit(pid: 11, uid: 2) == .admit, "which a newcomer gets without anyone closed")
    }

    @Test("a held connection is dropped only at its deadline, or when the queue is full (the oldest)")
    func heldExpiry() {
        let held = HeldConnections<Int>(capacity: 3)
        for (value, deadline) in [(1, UInt64(10)), (2, 20), (3, 30)] {
            #expect(held.append(.init(payload: value, pid: 1, deadline: deadline)) == nil)
        }
        #expect(held.append(.init(payload: 4, pid: 2, deadline: 40))?.payload == 1, "over capacity: the oldest is dropped")
        var expired: [Int] = []
        held.expire(now: 19) { expired.append($0.payload) }
        #expect(expired == [], "none is due before 20")
        held.expire(now: 30) { expired.append($0.payload) }
        #expect(expired == [2, 3])
        #expect(held.count == 1 && held.count(process: 1) == 0 && held.count(process: 2) == 1)
        let none = HeldConnections<Int>(capacity: 0)
        #expect(none.append(.init(payload: 9, pid: 1, deadline: 1))?.payload == 9, "no room at all: the entry itself comes back")
    }
}
