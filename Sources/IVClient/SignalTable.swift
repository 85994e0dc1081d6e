import WireFormat

/// The two atomic operations the signal-table protocol needs on the words
/// of a region (offsets relative to its begin, 4-byte aligned and inside it).
protocol SharedWords {
    func exchangeWord(_ value: UInt32, at offset: UInt32) -> UInt32
    func compareExchangeWord(expected: UInt32, desired: UInt32, at offset: UInt32) -> UInt32
}

/// The vSoC signal-table protocol (docs/protocols.md §3) for one table, as
/// logic over `SharedWords`: no I/O. The caller rings the eventfd when
/// `send` says so and wakes futexes for what `drain` hands out.
///
/// An entry is a region offset of a futex word (4-byte aligned, not 0: 0
/// marks a free slot) with bit 0 set to ask for a round trip. An offset goes
/// to slot `(offset >> 2) & (2^n - 1)`, or the next free one after it.
struct SignalTable {
    static let roundTripFlag: UInt32 = 1
    static let flagBits: UInt32 = 3

    let layout: SignalTableLayout

    enum SendOutcome: Equatable {
        /// Stored; ring the peer's eventfd when `ring` (the signal word went
        /// from 0 to 1: otherwise an interrupt is already on its way).
        case queued(ring: Bool)
        /// The offset was already waiting with at least these flags.
        case alreadyQueued
        /// Every slot holds another offset. The signal word was raised
        /// (`ring` as above), so the peer will drain the table.
        case full(ring: Bool)
    }

    func slot(for offset: UInt32) -> UInt32 {
        (offset >> 2) & (layout.nodeCount - 1)
    }

    /// Queues `offset` for the peer.
    func send(offset: UInt32, roundTrip: Bool, words: some SharedWords) -> SendOutcome {
        precondition(offset & Self.flagBits == 0 && offset != 0, "a signalled offset is 4-byte aligned and not 0")
        let entry = offset | (roundTrip ? Self.roundTripFlag : 0)
        var slot = slot(for: offset)
        var probed: UInt32 = 0
        while probed < layout.nodeCount {
            let address = layout.tableOffset + 4 * slot
            let seen = words.compareExchangeWord(expected: 0, desired: entry, at: address)
            if seen == 0 { return .queued(ring: raiseSignalWord(words)) }
            if seen & ~Self.flagBits == offset {
                if seen | entry == seen { return .alreadyQueued }
                // Waiting without the round-trip flag: add it, unless the
                // receiver took the entry meanwhile (then look again here).
                if words.compareExchangeWord(expected: seen, desired: seen | entry, at: address) == seen {
                    return .queued(ring: raiseSignalWord(words))
                }
                continue
            }
            slot = (slot + 1) & (layout.nodeCount - 1)
            probed += 1
        }
        return .full(ring: raiseSignalWord(words))
    }

    /// Sets interrupt_signalled; true when it was 0, so the eventfd must be
    /// written (interrupts coalesce while it is 1: the receiver has not
    /// taken the previous one yet).
    func raiseSignalWord(_ words: some SharedWords) -> Bool {
        words.exchangeWord(1, at: layout.signalledOffset) == 0
    }

    /// Clears interrupt_signalled; true when it was set, i.e. an interrupt
    /// was pending. Whoever takes the interrupt must clear the word, or the
    /// sender's next interrupt merges into this one and rings nothing.
    func takeSignalWord(_ words: some SharedWords) -> Bool {
        words.exchangeWord(0, at: layout.signalledOffset) != 0
    }

    /// Takes every queued entry: clears interrupt_signalled first (so a
    /// sender that stores after this rings again), then swaps each slot with
    /// 0. Calls `handle(offset, roundTrip)` per entry in slot order.
    func drain(words: some SharedWords, _ handle: (UInt32, Bool) -> Void) {
        _ = takeSignalWord(words)
        for slot in 0..<layout.nodeCount {
            let entry = words.exchangeWord(0, at: layout.tableOffset + 4 * slot)
            if entry != 0 { handle(entry & ~Self.flagBits, entry & Self.roundTripFlag != 0) }
        }
    }
}
