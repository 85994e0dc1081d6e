/// Everything the server needs to run one VM's shared memory.
public struct ServerConfiguration: Sendable {
    /// Defaults a normal user can use: /dev/shm and /tmp are world-writable.
    /// They are the original Cuttlefish server's, so its clients find us.
    public static let defaultSharedMemoryPath = "/dev/shm/ivshmem"
    public static let defaultQemuSocketPath = "/tmp/ivshmem_socket_qemu"
    public static let defaultClientSocketPath = "/tmp/ivshmem_socket_client"

    public var layout: LayoutPlan
    /// Where the layout came from, for logs.
    public var layoutSource: String
    public var sharedMemoryPath: String
    public var qemuSocketPath: String
    public var clientSocketPath: String

    public init(
        layout: LayoutPlan, layoutSource: String,
        sharedMemoryPath: String = defaultSharedMemoryPath,
        qemuSocketPath: String = defaultQemuSocketPath,
        clientSocketPath: String = defaultClientSocketPath
    ) {
        self.layout = layout
        self.layoutSource = layoutSource
        self.sharedMemoryPath = sharedMemoryPath
        self.qemuSocketPath = qemuSocketPath
        self.clientSocketPath = clientSocketPath
    }

    /// The QEMU options that attach a VM to this server.
    public var qemuArguments: [String] {
        [
            "-chardev", "socket,path=\(qemuSocketPath),id=ivsh",
            "-device", "ivshmem-doorbell,chardev=ivsh,vectors=\(layout.regionCount)",
        ]
    }
}
