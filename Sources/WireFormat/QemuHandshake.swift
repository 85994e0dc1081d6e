
/// QEMU's ivshmem server protocol, version 0, as ivserver speaks it: the
/// host pretends to be peer 0 and the VM is peer 1024. Spec:
/// docs/protocols.md §1. Pure: it only says which messages to send, in
/// which order, with which fd.
public enum QemuHandshake {
    public static let protocolVersion: Int64 = 0
    /// The VM's peer id. QEMU sizes its peer table by the largest id it has
    /// seen, so 1024 costs it a 1025-entry table: harmless, and what the
    /// original server and its guests used.
    public static let vmPeerID: Int64 = 1024
    public static let hostPeerID: Int64 = 0
    /// The value of the shared-memory message.
    public static let sharedMemoryMarker: Int64 = -1

    /// Sent instead of the handshake to a VM that is refused. QEMU 7.2 does
    /// not give up when the server just closes the socket during device
    /// start-up: it spins at full CPU forever. A version other than 0 makes
    /// it fail ("server sent version -1, expecting 0") and exit.
    public static let refusal = Message(value: -1, attachment: nil)

    /// Which of the server's fds travels with a message.
    public enum Attachment: Equatable, Sendable {
        case sharedMemory
        /// Region i's guest_to_host eventfd: the host peer's vector i.
        case guestToHost(region: Int)
        /// Region i's host_to_guest eventfd: the VM's own vector i.
        case hostToGuest(region: Int)
    }

    public struct Message: Equatable, Sendable {
        public var value: Int64
        public var attachment: Attachment?

        /// The 8 little-endian bytes on the wire.
        public var payload: [UInt8] {
            var bytes: [UInt8] = []
            bytes.appendLittleEndian(value)
            return bytes
        }
    }

    /// The whole sequence: 3 + 2 × vectorCount messages. `vectorCount` is
    /// the region count, or fewer when QEMU's device is known to have fewer
    /// vectors (it would reject the rest; see `QemuCommandLine`).
    public static func messages(regionCount: Int, vectorCount: Int? = nil) -> [Message] {
        let regionCount = min(regionCount, vectorCount ?? regionCount)
        var messages = [
            // 1. protocol version, no fd
            Message(value: protocolVersion, attachment: nil),
            // 2. the VM's own peer id, no fd
            Message(value: vmPeerID, attachment: nil),
            // 3. -1 with the shared memory (QEMU blocks until it has this)
            Message(value: sharedMemoryMarker, attachment: .sharedMemory),
        ]
        // 4. "peer 0 exists": one eventfd per vector, in vector order; the
        //    guest rings region i's doorbell by writing vector i of peer 0.
        for region in 0..<regionCount {
            messages.append(Message(value: hostPeerID, attachment: .guestToHost(region: region)))
        }
        // 5. the VM's own vectors: writing these fds interrupts the guest.
        //    Only after message 3: QEMU 7.2 crashes on own vectors before it.
        for region in 0..<regionCount {
            messages.append(Message(value: vmPeerID, attachment: .hostToGuest(region: region)))
        }
        return messages
    }
}
