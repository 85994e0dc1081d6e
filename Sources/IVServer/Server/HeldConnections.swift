/// Connections waiting for room, oldest first: accepted, but nothing sent
/// or read yet (`Payload` is what the server keeps of each: its fd). The
/// oldest is greeted as soon as there is room (`greetInTurn`), and one is
/// closed only when it has waited out the handshake timeout with no room
/// for it, or to keep within `capacity`. Pure bookkeeping, loop thread only.
final class HeldConnections<Payload> {
    struct Entry {
        let payload: Payload
        let pid: Int32
        /// Loop time (ms) after which, still without room, it is closed.
        let deadline: UInt64
    }

    /// At most this many wait (what the open-file limit leaves); beyond,
    /// the oldest is dropped to take the newest.
    let capacity: Int
    private var entries: [Entry] = []
    private var start = 0
    private var byProcess: [Int32: Int] = [:]

    init(capacity: Int) {
        self.capacity = capacity
    }

    var count: Int { entries.count - start }
    var isEmpty: Bool { start == entries.count }
    var oldest: Entry? { isEmpty ? nil : entries[start] }

    func count(process pid: Int32) -> Int { byProcess[pid] ?? 0 }

    /// Queues `entry`; the oldest it displaced (over capacity), if any, is
    /// returned for the caller to close. With no capacity at all, `entry`
    /// itself comes back.
    func append(_ entry: Entry) -> Entry? {
        guard capacity > 0 else { return entry }
        let displaced = count >= capacity ? takeOldest() : nil
        entries.append(entry)
        byProcess[entry.pid, default: 0] += 1
        return displaced
    }

    func takeOldest() -> Entry? {
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
    func greetInTurn(while hasRoom: () -> Bool, _ greet: (Entry) -> Void) {
        while hasRoom(), let entry = takeOldest() { greet(entry) }
    }

    /// Takes out, oldest first, every entry whose deadline is at or before
    /// `now`, handing each to `expire`.
    func expire(now: UInt64, _ expire: (Entry) -> Void) {
        while let first = oldest, first.deadline <= now, let entry = takeOldest() { expire(entry) }
    }
}
