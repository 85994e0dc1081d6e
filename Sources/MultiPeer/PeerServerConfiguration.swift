import ServerCore
import WireFormat
import LinuxSystem

/// Everything the multi-peer server needs: QEMU's ivshmem-server's settings
/// (with its defaults) and ivserver's own fences.
public struct PeerServerConfiguration: Sendable {
    /// QEMU's ivshmem-server defaults, so that a drop-in finds the same paths.
    public static let defaultSocketPath = PeerProtocol.defaultSocketPath
    public static let defaultSharedMemoryName = "ivshmem"
    public static let defaultSize: UInt64 = 4 << 20
    public static let defaultVectors = 1
    /// QEMU's server allows at most 64 vectors per peer; so does this one.
    public static let maximumVectors = 64
    public static let defaultPidFile = "/var/run/ivshmem-server.pid"
    /// Well above the ~114 at which QEMU's server gives up.
    public static let defaultMaximumPeers = 4096
    /// A peer with this many messages unsent (it does not read) is dropped.
    public static let defaultMaximumQueuedMessages = 8192

    public var socketPath = defaultSocketPath
    public var memory = MemoryLocation.posixName(defaultSharedMemoryName)
    /// Bytes (rounded up to whole huge pages on hugetlbfs).
    public var size = defaultSize
    /// Eventfds per peer: the vectors each peer can be interrupted on.
    public var vectors = defaultVectors
    public var maximumPeers = defaultMaximumPeers
    public var maximumQueuedMessages = defaultMaximumQueuedMessages
    public var socketMode: UInt32 = AccessDefaults.socketMode
    public var socketGroup: UInt32?
    public var sharedMemoryMode: UInt32 = AccessDefaults.sharedMemoryMode
    public var accessPolicy: AccessPolicy
    /// Take every page of the memory at start (--prealloc); a filesystem
    /// without the room refuses the start.
    public var preallocate = false
    /// How many peer IDs the server hands out before its counter wraps:
    /// all 65,536, or fewer in tests that meet a reused ID.
    package var peerIDCount = 1 << 16

    public init(accessPolicy: AccessPolicy) {
        self.accessPolicy = accessPolicy
    }

    /// For a POSIX name, `<object>.lock` keeps a second server (of either
    /// mode) off that memory; a directory's memory is new and unnamed.
    public var lockPath: String? { memory.path.map { $0 + ".lock" } }

    /// The QEMU options that attach a VM to this server as a peer.
    public var qemuArguments: [String] {
        ["-chardev", "socket,path=\(socketPath),id=ivshmem",
         "-device", "ivshmem-doorbell,chardev=ivshmem,vectors=\(vectors)"]
    }

    /// Why these settings cannot work, if they cannot.
    public var problem: String? {
        if case let .posixName(name) = memory, let problem = MemoryLocation.problem(withPosixName: name) { return problem }
        if case let .directory(directory) = memory, directory.isEmpty { return "the shared-memory directory (-m) is empty" }
        if size == 0 || size > 1 << 40 { return "the size (-l) must be more than 0 and at most 1T" }
        if !(1...Self.maximumVectors).contains(vectors) { return "the vector count (-n) must be 1 to \(Self.maximumVectors)" }
        if !(1...65536).contains(maximumPeers) { return "--max-peers must be 1 to 65536 (peer IDs have 16 bits)" }
        if maximumQueuedMessages < 1 { return "--max-queued-messages must be at least 1" }
        if socketPath.isEmpty { return "the socket path (-S) is empty" }
        if socketPath.utf8.count > UnixSocket.maximumPathLength {
            return "the socket path is longer than a UNIX socket address holds (\(UnixSocket.maximumPathLength) bytes)"
        }
        return nil
    }
}
