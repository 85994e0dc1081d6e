
/// QEMU's multi-peer ivshmem protocol (QEMU's docs/specs/ivshmem-spec.rst;
/// docs/protocols.md §3), as pure message plans: which values go to a peer,
/// in which order, with which fd. Every message is one signed 64-bit
/// little-endian integer, some with one fd.
///
/// The vSoC mode (`QemuHandshake`) is the special case of one VM peer and
/// a virtual host peer; this is the general one, for any number of peers.
public enum PeerProtocol {
    /// QEMU's ivshmem-server's default socket.
    public static let defaultSocketPath = "/tmp/ivshmem_socket"
    public static let protocolVersion: Int64 = 0
    /// The value of the message that carries the shared memory.
    public static let sharedMemoryMarker: Int64 = -1
    /// Sent as the version to a peer that is refused (no free ID, over
    /// --max-peers): QEMU then fails at once with "server sent version -1"
    /// instead of waiting on a server that closed the socket.
    public static let refusalVersion: Int64 = -1

    /// A peer ID: 0…65535, what the Doorbell register's upper 16 bits hold.
    public typealias PeerID = UInt16

    /// Which fd travels with a message.
    public enum Attachment: Hashable, Sendable {
        case sharedMemory
        /// Peer `peer`'s eventfd for `vector`: writing it interrupts that
        /// peer on that vector.
        case vector(peer: PeerID, vector: Int)
    }

    public struct Message: Equatable, Sendable {
        public var value: Int64
        public var attachment: Attachment?

        public init(value: Int64, attachment: Attachment? = nil) {
            self.value = value
            self.attachment = attachment
        }

        /// The 8 little-endian bytes on the wire.
        public var payload: [UInt8] {
            var bytes: [UInt8] = []
            bytes.appendLittleEndian(value)
            return bytes
        }
    }

    /// What a new peer is sent on connect: the version, its ID, the memory,
    /// then each peer in `others` (in that order) with its vectors, then its
    /// own vectors. `vectors` is the server's count; `kept` the device's own
    /// `vectors=` when known to be fewer (QEMU rejects each fd beyond it,
    /// and during its device start-up that rejection is fatal).
    public static func greeting(for peer: PeerID, others: [PeerID], vectors: Int, kept: Int? = nil) -> [Message] {
        var messages = [
            Message(value: protocolVersion),
            Message(value: Int64(peer)),
            Message(value: sharedMemoryMarker, attachment: .sharedMemory),
        ]
        for other in others where other != peer {
            messages += announcement(of: other, vectors: vectors, kept: kept)
        }
        messages += announcement(of: peer, vectors: vectors, kept: kept)
        return messages
    }

    /// What every other peer is sent when `peer` joins: its ID once per
    /// vector, each with that vector's eventfd, in vector order.
    public static func announcement(of peer: PeerID, vectors: Int, kept: Int? = nil) -> [Message] {
        (0..<sentVectors(vectors, kept: kept)).map { Message(value: Int64(peer), attachment: .vector(peer: peer, vector: $0)) }
    }

    /// What every other peer is sent when `peer` leaves: its ID, no fd.
    public static func departure(of peer: PeerID) -> Message {
        Message(value: Int64(peer))
    }

    /// How many of a peer's vectors a device keeping `kept` is sent.
    public static func sentVectors(_ vectors: Int, kept: Int?) -> Int {
        min(vectors, max(0, kept ?? vectors))
    }
}
