import ServerCore
import WireFormat

/// Everything the server needs to run one VM's shared memory.
public struct VSoCServerConfiguration: Sendable {
    /// Defaults a normal user can use: /dev/shm and /tmp are world-writable.
    /// They are the original Cuttlefish server's, so its clients find us.
    public static let defaultSharedMemoryPath = "/dev/shm/ivshmem"
    public static let defaultQemuSocketPath = "/tmp/ivshmem_socket_qemu"
    public static let defaultClientSocketPath = HALDProtocol.defaultSocketPath

    public static let defaultSocketMode = AccessDefaults.socketMode
    public static let defaultSharedMemoryMode = AccessDefaults.sharedMemoryMode
    public static let defaultHandshakeTimeoutMilliseconds: UInt64 = 5000
    public static let defaultMaximumPending = 1024
    public static let defaultMaximumPendingPerProcess = 64
    public static let defaultMaximumPendingPerUser = 256

    public var layout: LayoutPlan
    /// Where the layout came from, for logs.
    public var layoutSource: String
    public var sharedMemoryPath: String
    public var qemuSocketPath: String
    public var clientSocketPath: String
    /// Mode of both socket files, and their group when set.
    public var socketMode: UInt32 = defaultSocketMode
    public var socketGroup: UInt32?
    public var sharedMemoryMode: UInt32 = defaultSharedMemoryMode
    /// Who may connect to either socket.
    public var accessPolicy: AccessPolicy
    /// A host client that has not finished its handshake by then is closed.
    public var handshakeTimeoutMilliseconds: UInt64 = defaultHandshakeTimeoutMilliseconds
    /// Host clients mid-handshake at once, in all. When it is reached, a
    /// pending connection of whoever holds the most makes room.
    public var maximumPending: Int = defaultMaximumPending
    /// Host clients one process may have mid-handshake; its oldest makes
    /// room for its newest.
    public var maximumPendingPerProcess: Int = defaultMaximumPendingPerProcess
    /// Host clients one user's processes may have mid-handshake together.
    public var maximumPendingPerUser: Int = defaultMaximumPendingPerUser

    /// Replace a leftover shared-memory file even while a process (a VM of
    /// a crashed server) still holds it.
    public var replaceHeldMemory = false

    /// Take every page of the memory at start (--prealloc); a filesystem
    /// without the room refuses the start.
    public var preallocate = false

    var pendingLimits: PendingLimits {
        PendingLimits(perProcess: maximumPendingPerProcess, perUser: maximumPendingPerUser, total: maximumPending)
    }

    public init(
        layout: LayoutPlan, layoutSource: String,
        sharedMemoryPath: String = defaultSharedMemoryPath,
        qemuSocketPath: String = defaultQemuSocketPath,
        clientSocketPath: String = defaultClientSocketPath,
        accessPolicy: AccessPolicy
    ) {
        self.layout = layout
        self.layoutSource = layoutSource
        self.sharedMemoryPath = sharedMemoryPath
        self.qemuSocketPath = qemuSocketPath
        self.clientSocketPath = clientSocketPath
        self.accessPolicy = accessPolicy
    }

    /// The lock that keeps a second server off these paths.
    public var lockPath: String { sharedMemoryPath + ".lock" }

    /// The QEMU options that attach a VM to this server.
    public var qemuArguments: [String] {
        [
            "-chardev", "socket,path=\(qemuSocketPath),id=ivsh",
            "-device", "ivshmem-doorbell,chardev=ivsh,vectors=\(layout.regionCount)",
        ]
    }

    /// The same for a libvirt domain: its <shmem> device (docs/libvirt.md).
    /// libvirt takes no <size> for this model: the memory is the server's.
    public var libvirtDevice: String {
        LibvirtShmem.element(name: "ivserver", socketPath: qemuSocketPath, vectors: layout.regionCount)
    }
}
