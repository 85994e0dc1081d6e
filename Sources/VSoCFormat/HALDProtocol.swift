/// The host-client (HALD) handshake, version 0, as both ends see it
/// (docs/protocols.md §2):
///
///     1. server → client: u32 protocol version (0)
///     2. client → server: i16 name length (1...16), then the name
///     3. server → client: u64 0 carrying 3 fds (guest_to_host eventfd,
///        host_to_guest eventfd, shared memory), then a close
///     4. a refusal is a close with no fds
public enum HALDProtocol {
    public static let version: UInt32 = 0
    /// Where ivserver listens for host clients unless told otherwise.
    public static let defaultSocketPath = "/tmp/ivshmem_socket_client"
    public static let nameLengths: ClosedRange<Int> = 1...16
    /// Step 3's payload; the fds travel with it.
    public static let grantPayload: [UInt8] = Array(repeating: 0, count: 8)
    public static let grantedFDCount = 3

    /// Step 1's bytes.
    public static let greeting: [UInt8] = {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(version)
        return bytes
    }()

    /// Step 2's bytes for `name`, or nil when the length is outside 1...16.
    public static func request(region name: String) -> [UInt8]? {
        let utf8 = Array(name.utf8)
        guard nameLengths.contains(utf8.count) else { return nil }
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(Int16(utf8.count))
        return bytes + utf8
    }

    /// Whether a client speaking version 0 can talk to a server that greets
    /// with `version` (read as the signed value the C++ clients compare).
    public static func isSupported(serverVersion version: UInt32) -> Bool {
        Int32(bitPattern: version) <= Int32(Self.version)
    }

    /// A request for the server's state instead of a region (ivserver's
    /// extension): 16 bytes, where a region name has at most 15, so it can
    /// never name a region. The reply is the state as UTF-8 text, then a
    /// close; a server without the extension just closes.
    public static let statusRequestName = "#ivserver.status"

    /// Region names of the layouts Cuttlefish shipped. A client that must
    /// learn the layout but knows no region name tries these: the protocol
    /// hands the shared memory only to a handshake that names a region.
    public static let wellKnownRegionNames = [
        "hwcomposer", "fb_broadcast", "gralloc_manager", "gralloc_memory",
        "e2e_primary", "e2e_secondary", "e2e_manager", "e2e_managed",
    ]
}
