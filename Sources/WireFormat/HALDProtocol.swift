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

    /// A request for who the attached VM is (ivserver's extension, 16
    /// bytes like the status request): one line, `VMInfo`'s text.
    public static let vmInfoRequestName = "#ivserver.vminfo"

    /// A request for the layout (ivserver's extension, 16 bytes like the
    /// status request), whatever its regions are called: the answer is
    /// `LayoutAnswer`'s bytes, then a close.
    public static let layoutRequestName = "#ivserver.layout"

    /// The answer to `layoutRequestName`: the shared memory's size (u64,
    /// little-endian), then the layout header exactly as it is at the
    /// memory's start (docs/protocols.md).
    public enum LayoutAnswer {
        public static func encode(sharedMemorySize: UInt64, header: [UInt8]) -> [UInt8] {
            var bytes: [UInt8] = []
            bytes.appendLittleEndian(sharedMemorySize)
            return bytes + header
        }

        /// The size and the header's bytes; nil when the answer is too short to hold a size.
        public static func decode(_ bytes: [UInt8]) -> (sharedMemorySize: UInt64, header: [UInt8])? {
            guard bytes.count > 8, let size = UInt64(littleEndianBytes: Array(bytes[..<8])) else { return nil }
            return (size, Array(bytes[8...]))
        }
    }

    /// The answer to `vmInfoRequestName`: the VM's process (pid and its
    /// start time, which together tell one VM from the next), and when it
    /// attached. A new VM is a new process; one taken over across the
    /// server's own restart is the same.
    public struct VMInfo: Equatable, Sendable {
        public var pid: Int32
        /// The process's start, in clock ticks after boot (/proc/PID/stat).
        public var startTicks: UInt64
        /// The same as seconds since the epoch.
        public var started: Int
        /// When it attached to this server (seconds since the epoch).
        public var attached: Int

        public init(pid: Int32, startTicks: UInt64, started: Int, attached: Int) {
            self.pid = pid
            self.startTicks = startTicks
            self.started = started
            self.attached = attached
        }

        /// Whether `other` is the same VM: the same process.
        public func isSameVM(as other: VMInfo) -> Bool { pid == other.pid && startTicks == other.startTicks }

        /// "vm pid=4242 start-ticks=1234567 started=1764790000 attached=1764790003\n", or "vm none\n" for nil.
        public static func text(_ info: VMInfo?) -> String {
            guard let info else { return "vm none\n" }
            return "vm pid=\(info.pid) start-ticks=\(info.startTicks) started=\(info.started) attached=\(info.attached)\n"
        }

        /// Reads `text`: nil inside when no VM is attached; nil outside when it is not such a line.
        public static func parse(_ text: String) -> VMInfo?? {
            let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard words.first == "vm" else { return nil }
            if words.count == 2 && words[1] == "none" { return .some(nil) }
            var fields: [Substring: Substring] = [:]
            for word in words.dropFirst() {
                let parts = word.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { return nil }
                fields[parts[0]] = parts[1]
            }
            guard let pid = fields["pid"].flatMap({ Int32($0) }), let ticks = fields["start-ticks"].flatMap({ UInt64($0) }),
                  let started = fields["started"].flatMap({ Int($0) }), let attached = fields["attached"].flatMap({ Int($0) })
            else { return nil }
            return .some(VMInfo(pid: pid, startTicks: ticks, started: started, attached: attached))
        }
    }

    /// Region names of the layouts Cuttlefish shipped. A client that must
    /// learn the layout but knows no region name tries these: the protocol
    /// hands the shared memory only to a handshake that names a region.
    public static let wellKnownRegionNames = [
        "hwcomposer", "fb_broadcast", "gralloc_manager", "gralloc_memory",
        "e2e_primary", "e2e_secondary", "e2e_manager", "e2e_managed",
    ]
}
