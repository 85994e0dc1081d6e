import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer
import WireFormat

/// The signal-table protocol on a plain memory buffer: a table of 4 slots at
/// offset 0 with its signal word at 16, as in the default layout's
/// hwcomposer region.
@Suite("Signal tables on a memory buffer")
struct SignalTableTests {
    let memory = RegionMemory(anonymousBytes: 4096)
    let table = SignalTable(layout: SignalTableLayout(nodesLg2: 2, tableOffset: 0, signalledOffset: 16))

    func slots() throws -> [UInt32] { try (0..<4).map { try memory.load(offset: 4 * $0) } }
    func signalled() throws -> UInt32 { try memory.load(offset: 16) }

    func drained() -> [(UInt32, Bool)] {
        var seen: [(UInt32, Bool)] = []
        table.drain(words: memory) { seen.append(($0, $1)) }
        return seen
    }

    @Test("an offset goes to slot (offset >> 2) & (2^n - 1); only the first signal rings")
    func hashing() throws {
        #expect(table.slot(for: 40) == 2)
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .queued(ring: true))
        #expect(try slots() == [0, 0, 40, 0])
        #expect(try signalled() == 1)
        #expect(table.send(offset: 20, roundTrip: false, words: memory) == .queued(ring: false), "interrupts coalesce")
        #expect(try slots() == [0, 20, 40, 0])
    }

    @Test("collisions probe linearly and wrap; a full table says so and still raises the signal word")
    func collisions() throws {
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .queued(ring: true))   // slot 2
        #expect(table.send(offset: 56, roundTrip: false, words: memory) == .queued(ring: false))  // 2 taken → 3
        #expect(table.send(offset: 72, roundTrip: false, words: memory) == .queued(ring: false))  // 2, 3 → 0
        #expect(table.send(offset: 88, roundTrip: false, words: memory) == .queued(ring: false))  // 2, 3, 0 → 1
        #expect(try slots() == [72, 88, 40, 56])
        #expect(table.send(offset: 104, roundTrip: false, words: memory) == .full(ring: false))
        #expect(try slots() == [72, 88, 40, 56], "a full table is left as it was")
        #expect(drained().map(\.0) == [72, 88, 40, 56], "drained in slot order")
        #expect(try slots() == [0, 0, 0, 0])
        #expect(try signalled() == 0)
        // full with the signal word down: the peer must be interrupted
        for offset: UInt32 in [4, 8, 12, 16] { _ = table.send(offset: offset, roundTrip: false, words: memory) }
        _ = try memory.exchange(0, offset: 16)
        #expect(table.send(offset: 20, roundTrip: false, words: memory) == .full(ring: true))
    }

    @Test("the same offset is queued once; asking for a round trip adds bit 0 to the waiting entry")
    func duplicatesAndRoundTrip() throws {
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .queued(ring: true))
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .alreadyQueued)
        #expect(table.send(offset: 40, roundTrip: true, words: memory) == .queued(ring: false))
        #expect(try slots() == [0, 0, 41, 0])
        #expect(table.send(offset: 40, roundTrip: true, words: memory) == .alreadyQueued)
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .alreadyQueued, "a round trip covers a plain signal")
        // an entry further along the probe sequence is found too
        #expect(table.send(offset: 56, roundTrip: false, words: memory) == .queued(ring: false))  // slot 3
        #expect(table.send(offset: 56, roundTrip: true, words: memory) == .queued(ring: false))
        #expect(try slots() == [0, 0, 41, 57])
        let seen = drained()
        #expect(seen.map(\.0) == [40, 56] && seen.map(\.1) == [true, true])
    }

    @Test("after a drain the next signal rings again")
    func ringAfterDrain() throws {
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .queued(ring: true))
        #expect(drained().count == 1)
        #expect(table.send(offset: 40, roundTrip: false, words: memory) == .queued(ring: true))
    }

    @Test("a one-slot table (num_nodes_lg2 0)")
    func singleSlot() throws {
        let small = SignalTable(layout: SignalTableLayout(nodesLg2: 0, tableOffset: 100, signalledOffset: 104))
        #expect(small.send(offset: 8, roundTrip: false, words: memory) == .queued(ring: true))
        #expect(small.send(offset: 12, roundTrip: false, words: memory) == .full(ring: false))
        #expect(try memory.load(offset: 100) == 8)
    }

    @Test("concurrent senders and a receiver: each stored entry is handed out exactly once, nothing is lost")
    func concurrentSendersLoseNothing() throws {
        let big = SignalTable(layout: SignalTableLayout(nodesLg2: 4, tableOffset: 0, signalledOffset: 64))
        let memory = self.memory
        let stored = Shared<[UInt32: Int]>([:])
        let received = Shared<[UInt32: Int]>([:])
        let done = Shared(false)
        let senders = (0..<4).map { sender in
            TestThread {
                for round in 0..<2000 {
                    // 8 words per sender, 32 in all: more than the 16 slots,
                    // so senders also meet a full table
                    let offset = UInt32(2048 + 4 * (sender * 8 + round % 8))
                    while true {
                        switch big.send(offset: offset, roundTrip: false, words: memory) {
                        case .queued: stored.update { $0[offset, default: 0] += 1 }
                        case .alreadyQueued: break
                        case .full: continue
                        }
                        break
                    }
                }
            }
        }
        let receiver = TestThread {
            while true {
                let finished = done.value
                big.drain(words: memory) { offset, _ in received.update { $0[offset, default: 0] += 1 } }
                if finished { break }
            }
        }
        senders.forEach { $0.join() }
        done.update { $0 = true }
        receiver.join()
        #expect(received.value.count == 32, "every word arrived")
        #expect(received.value == stored.value, "each entry a sender stored was handed out once")
        #expect(try (0..<16).map { try memory.load(offset: 4 * $0) } == Array(repeating: 0, count: 16))
    }

    @Test("bounds and alignment of the memory accessors")
    func bounds() throws {
        #expect(throws: IVClientError.self) { try memory.read(offset: 4090, count: 8) }
        #expect(throws: IVClientError.self) { try memory.load(offset: 2) }
        #expect(throws: IVClientError.self) { try memory.load(offset: 4096) }
        #expect(throws: IVClientError.self) { try memory.write([1], offset: -1) }
        try memory.write([1, 2, 3], offset: 4093)
        #expect(try memory.read(offset: 4093, count: 3) == [1, 2, 3])
        #expect(try memory.compareExchange(expected: 0, desired: 7, offset: 8) == 0)
        #expect(try memory.compareExchange(expected: 0, desired: 9, offset: 8) == 7)
        #expect(try memory.add(3, offset: 8) == 7 && memory.load(offset: 8) == 10)
        #expect(try memory.wait(offset: 8, expected: 1, timeout: .seconds(1)) == .valueChanged)
        #expect(try memory.wait(offset: 8, expected: 10, timeout: .milliseconds(20)) == .timedOut)
    }
}
