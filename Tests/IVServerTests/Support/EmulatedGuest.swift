import LinuxSystem
@testable import ServerCore
import Glibc
@testable import IVClient
@testable import IVServer
import WireFormat

/// The guest's side of one region's vSoC signalling, played by the test
/// process over the fds a VM gets from ivserver. Written from
/// shared/spec/protocols.md §3 on its own, deliberately not reusing
/// IVClient's `SignalTable`, so that the two sides check each other:
///
/// - an interrupt from the host is the host_to_guest table's
///   interrupt_signalled word; the eventfd only wakes the guest up, and a
///   wake-up without the word is spurious;
/// - the guest interrupts the host by raising the guest_to_host word and
///   rings the Doorbell only when the word was 0;
/// - it stores a signal by probing from slot `(offset >> 2) & (n - 1)`,
///   forever while the table is full (as the original does, yielding here);
/// - it answers a round trip by signalling the word back, never dropping it.
final class EmulatedGuest: Sendable {
    let memory: RegionMemory
    let descriptor: RegionDescriptor
    /// What the guest's Doorbell writes for this region: the guest_to_host eventfd.
    let doorbell: OwnedFD
    /// What QEMU turns into this region's MSI-X vector: the host_to_guest eventfd.
    let vector: OwnedFD

    static let roundTripBit: UInt32 = 1

    /// The guest of region `index`, mapping the memory through the fd the
    /// VM was given (message 3 of the QEMU protocol).
    init(vm: FakeVM, region index: Int, layout: LayoutHeader) throws {
        descriptor = layout.regions[index]
        memory = try RegionMemory(fd: vm.sharedMemory, offset: UInt64(descriptor.beginOffset),
                                  count: Int(descriptor.size), socketPath: "(the VM's fds)", region: "guest \(index)")
        doorbell = vm.doorbells[index]
        vector = vm.ownVectors[index]
    }

    // MARK: interrupts

    /// The host → guest interrupt word.
    var hostInterruptWord: UInt32 { get throws { try memory.load(offset: Int(descriptor.hostToGuest.signalledOffset)) } }
    /// The guest → host interrupt word.
    var guestInterruptWord: UInt32 { get throws { try memory.load(offset: Int(descriptor.guestToHost.signalledOffset)) } }

    /// Interrupts the host: raise the guest_to_host word, ring only on 0 → 1.
    @discardableResult
    func interruptHost() throws -> Bool {
        guard try memory.exchange(1, offset: Int(descriptor.guestToHost.signalledOffset)) == 0 else { return false }
        try EventFD.signal(doorbell)
        return true
    }

    /// Waits for the host's interrupt up to `seconds`: take the word (swap
    /// with 0); while it was 0, wait for the eventfd, drain it, look again.
    func waitForInterrupt(seconds: Double) throws -> Bool {
        let deadline = monotonicSeconds() + seconds
        while true {
            if try memory.exchange(0, offset: Int(descriptor.hostToGuest.signalledOffset)) != 0 { return true }
            let left = deadline - monotonicSeconds()
            guard left > 0 else { return false }
            var entry = pollfd(fd: vector.rawValue, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, Int32((left * 1000).rounded(.up))) == 1 { _ = try EventFD.drain(vector) }
        }
    }

    // MARK: signal tables

    /// Queues `offset` in the guest_to_host table and interrupts the host
    /// when it was stored into a free slot.
    func sendSignal(offset: UInt32, roundTrip: Bool) throws {
        let table = descriptor.guestToHost
        let entry = offset | (roundTrip ? Self.roundTripBit : 0)
        let mask = table.nodeCount - 1
        var slot = (offset >> 2) & mask
        while true {
            let address = Int(table.tableOffset + 4 * slot)
            let seen = try memory.compareExchange(expected: 0, desired: entry, offset: address)
            if seen == 0 {
                try interruptHost()
                return
            }
            if seen == entry { return }
            if seen & ~3 == offset {
                if !roundTrip || seen & Self.roundTripBit != 0 { return }
                // the host may take the entry meanwhile: then look at this slot again
                if try memory.compareExchange(expected: seen, desired: entry, offset: address) == seen { return }
                continue
            }
            slot = (slot + 1) & mask
            if slot == (offset >> 2) & mask { sched_yield() }  // full: wait for the host to drain it
        }
    }

    /// Takes what the host queued in the host_to_guest table: clear the
    /// word, swap each entry with 0, wake its futex, echo round trips.
    func processSignals(_ handle: (UInt32) -> Void) throws {
        let table = descriptor.hostToGuest
        _ = try memory.exchange(0, offset: Int(table.signalledOffset))
        for slot in 0..<table.nodeCount {
            let entry = try memory.exchange(0, offset: Int(table.tableOffset + 4 * slot))
            guard entry != 0 else { continue }
            let offset = entry & ~3
            handle(offset)
            _ = try memory.wake(offset: Int(offset))
            if entry & Self.roundTripBit != 0 { try sendSignal(offset: offset, roundTrip: false) }
        }
    }
}
