/// Connections waiting for room, oldest first: accepted, but nothing sent
/// or read yet (`Payload` is what the server keeps of each: its fd). The
/// oldest is greeted as soon as there is room (`greetInTurn`), and one is
/// closed only when it has waited out the handshake timeout with no room
/// for it, or to keep within `capacity`. Pure bookkeeping, loop thread only.
package final class HeldConnections<Payload> {
    package struct Entry {
        package let payload: Payload
        package let pid: Int32
        /// Loop time (ms) after which, still without room, it is closed.
        package let deadline: UInt64

        package init(payload: Payload, pid: Int32, deadline: UInt64) {
            self.payload = payload
            self.pid = pid
            self.deadline = deadline
        }
    }

    /// At most this many wait (what the open-file limit leaves); beyond,
    /// the oldest is dropped to take the newest.
    package let capacity: Int
    private var entries: [Entry] = []
    private var start = 0
    private var byProcess: [Int32: Int] = [:]

    package init(capacity: Int) {
        self.capacity = capacity
    }

    package var count: Int { entries.count - start }
    package var isEmpty: Bool { start == entries.count }
    package var oldest: Entry? { isEmpty ? nil : entries[start] }

    package func count(process pid: Int32) -> Int { byProcess[pid] ?? 0 }

    /// Queues `entry`; the oldest it displaced (over capacity), if any, is
    /// returned for the caller to close. With no capacity at all, `entry`
    /// itself comes back.
    package func append(_ entry: Entry) -> Entry? {
        guard capacity > 0 else { return entry }
        let displaced = count >= capacity ? takeOldest() : nil
        entries.append(entry)
        byProcess[entry.pid, default: 0] += 1
        return displaced
    }

    package func takeOldest() -> Entry? {
        guard !isEmpty else { return nil }
        let entry = entries[start]
        start += 1
        if start == entries.count {
            entries.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 4096 && start * 2 >= entries.count {
            entries.removeFirst(start)
            start = 0
        }
        byProcess[entry.pid]! -= 1
        if byProcess[entry.pid] == 0 { byProcess[entry.pid] = nil }
        return entry
    }

    /// Hands the oldest entries to `greet`, one at a time, while
    /// `hasRoom()` says there is room (greeting one takes room).
    package func greetInTurn(while hasRoom: () -> Bool, _ greet: (Entry) -> Void) {
        while hasRoom(), let entry = takeOldest() { greet(entry) }
    }

    /// Takes out, oldest first, every entry whose deadline is at or before
    /// `now`, handing each to `expire`.
    package func expire(now: UInt64, _ expire: (Entry) -> Void) {
        while let first = oldest, first.deadline <= now, let entry = takeOldest() { expire(entry) }
    }
}
