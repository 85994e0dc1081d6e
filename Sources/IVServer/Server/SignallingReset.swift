import ServerCore
import WireFormat

/// What a new VM finds in each region's signalling state: what a freshly
/// started server gives, whatever the previous VM left (docs/protocols.md
/// §3). Both signal tables' slots and `interrupt_signalled` words are 0,
/// and both eventfds' counts are drained: the host's first interrupt to the
/// new guest rings (the word goes from 0 to 1), and no host client is woken
/// for a ring of a VM that is gone. The regions' data is kept.
///
/// The words to clear come from the plan (pure); the server applies it
/// through the memory's mapping and the eventfds, and reports what it found.
public enum SignallingReset {
    /// One region's signalling words, as absolute offsets into the memory.
    struct RegionWords: Equatable {
        let index: Int
        let name: String
        let guestToHostSignalled: Int
        let hostToGuestSignalled: Int
        /// Every slot of both signal tables.
        let tableSlots: [Int]
    }

    /// What was left in one region (all zero: nothing).
    public struct Found: Equatable, Sendable {
        public var index: Int
        public var name: String
        public var hostToGuestSignalled = false
        public var guestToHostSignalled = false
        /// Signal-table entries (offsets queued, either direction).
        public var queuedEntries = 0
        /// Undrained eventfd counts.
        public var hostToGuestRings: UInt64 = 0
        public var guestToHostRings: UInt64 = 0

        init(index: Int, name: String) {
            self.index = index
            self.name = name
        }

        public var isClean: Bool {
            !hostToGuestSignalled && !guestToHostSignalled && queuedEntries == 0 && hostToGuestRings == 0 && guestToHostRings == 0
        }
    }

    static func words(of plan: LayoutPlan) -> [RegionWords] {
        plan.regions.map { region in
            let begin = Int(region.beginOffset)
            func slots(_ table: SignalTableLayout) -> [Int] {
                (0..<Int(table.nodeCount)).map { begin + Int(table.tableOffset) + 4 * $0 }
            }
            return RegionWords(index: region.index, name: region.name,
                               guestToHostSignalled: begin + Int(region.guestToHost.signalledOffset),
                               hostToGuestSignalled: begin + Int(region.hostToGuest.signalledOffset),
                               tableSlots: slots(region.guestToHost) + slots(region.hostToGuest))
        }
    }

    /// The bytes the server and every region's signalling touch (both
    /// signal tables and both `interrupt_signalled` words of each region):
    /// their pages are taken from the filesystem at start, so that neither
    /// a new VM's reset nor a client's signal can fault on a full one.
    static func signallingRanges(of plan: LayoutPlan) -> [Range<UInt64>] {
        plan.regions.map { region in
            let begin = UInt64(region.beginOffset)
            let tables = [region.guestToHost, region.hostToGuest]
            let first = tables.map { UInt64(min($0.tableOffset, $0.signalledOffset)) }.min() ?? 0
            let last = tables.map { UInt64(max($0.tableOffset + 4 * $0.nodeCount, $0.signalledOffset + 4)) }.max() ?? 0
            return (begin + first)..<(begin + last)
        }
    }

    /// The bytes anyone may touch: the layout header and every region.
    static func touchableRanges(of plan: LayoutPlan, headerSize: Int) -> [Range<UInt64>] {
        [0..<UInt64(headerSize)] + plan.regions.map { UInt64($0.beginOffset)..<UInt64($0.endOffset) }
    }

    /// "region 'e2e_primary' (#4): host → guest interrupt_signalled was set, 1 ring undrained on its host → guest eventfd"
    static func describe(_ found: [Found]) -> String {
        let left = found.filter { !$0.isClean }
        guard !left.isEmpty else { return "nothing was left by a previous VM" }
        return left.map { region in
            var parts: [String] = []
            if region.hostToGuestSignalled { parts.append("host → guest interrupt_signalled was set") }
            if region.guestToHostSignalled { parts.append("guest → host interrupt_signalled was set") }
            if region.queuedEntries > 0 { parts.append("\(region.queuedEntries) signal-table entr\(region.queuedEntries == 1 ? "y" : "ies") cleared") }
            if region.hostToGuestRings > 0 { parts.append("\(region.hostToGuestRings) ring(s) drained from its host → guest eventfd") }
            if region.guestToHostRings > 0 { parts.append("\(region.guestToHostRings) ring(s) drained from its guest → host eventfd") }
            return "region '\(region.name)' (#\(region.index)): " + parts.joined(separator: ", ")
        }.joined(separator: "; ")
    }
}
