import Glibc

/// The orchestrator: creates the shared memory, the eventfds and both
/// sockets, serves QEMU and host clients on one libuv loop until SIGINT,
/// SIGTERM or SIGHUP, then closes everything and removes what it created.
public final class Server {
    public let configuration: ServerConfiguration
    private let report: (ServerEvent) -> Void

    private var listeners: [Listener] = []
    private var signals: [SignalHandle] = []
    private var clients: [ObjectIdentifier: ClientConnection] = [:]
    private var vm: VMConnection?
    private var loop: EventLoop?

    public init(configuration: ServerConfiguration, onEvent: @escaping (ServerEvent) -> Void) {
        self.configuration = configuration
        self.report = onEvent
    }

    /// Runs until a stop signal. Throws (SystemError or UVError) only while
    /// starting; whatever it created by then is removed before it returns.
    public func run() throws {
        let plan = configuration.layout
        var created: [CreatedFile] = []
        defer { for file in created.reversed() { file.remove() } }

        let sharedMemory = try SharedMemoryFile.create(
            path: configuration.sharedMemoryPath, size: UInt64(plan.size), header: LayoutEncoder.encode(plan))
        created.append(sharedMemory.file)
        let channels = try plan.regions.map { _ throws(SystemError) in try RegionChannels() }
        let resources = ServedResources(
            plan: plan, sharedMemory: sharedMemory, channels: channels,
            qemuSocketPath: configuration.qemuSocketPath, report: report)

        let loop = try EventLoop()
        self.loop = loop
        defer {
            closeEverything()
            loop.close()
            self.loop = nil
        }
        let qemu = try Listener(
            loop: loop, path: configuration.qemuSocketPath,
            onAccept: { [unowned self] fd in self.acceptVM(fd, resources: resources) },
            onError: { [unowned self] error in self.report(.acceptFailed(socket: self.configuration.qemuSocketPath, error: "\(error)")) })
        listeners.append(qemu)
        created.append(qemu.file)
        let client = try Listener(
            loop: loop, path: configuration.clientSocketPath,
            onAccept: { [unowned self] fd in self.acceptClient(fd, resources: resources) },
            onError: { [unowned self] error in self.report(.acceptFailed(socket: self.configuration.clientSocketPath, error: "\(error)")) })
        listeners.append(client)
        created.append(client.file)
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signals.append(try SignalHandle(loop: loop, signal: signal) { [unowned self] signal in
                self.report(.stopping(signal: signal))
                self.closeEverything()
            })
        }

        report(.ready(configuration))
        loop.run()
    }

    /// Closes listeners, connections and signal handles; the loop then runs
    /// out of work and `run` returns.
    private func closeEverything() {
        listeners.forEach { $0.close() }
        listeners = []
        vm?.closeSilently()
        for client in Array(clients.values) { client.close() }
        signals.forEach { $0.close() }
        signals = []
    }

    private func acceptVM(_ fd: OwnedFD, resources: ServedResources) {
        if let current = vm {
            if current.isAlive {
                report(.vmRefused(peer: try? UnixSocket.peerCredentials(fd), current: current.peer))
                // 8 bytes into a fresh socket's empty buffer cannot block;
                // if the peer is already gone there is nothing to tell it.
                _ = try? UnixSocket.send(fd, QemuHandshake.refusal.payload[...])
                fd.close()
                return
            }
            // It hung up, but its end of stream has not been read yet.
            current.close(reason: "QEMU hung up")
        }
        guard let loop, let socket = makePeerSocket(fd, loop: loop, readSize: 256, on: configuration.qemuSocketPath) else { return }
        let connection = VMConnection(socket: socket, resources: resources) { [unowned self] closed in
            if self.vm === closed { self.vm = nil }
        }
        vm = connection
        connection.start()
    }

    private func acceptClient(_ fd: OwnedFD, resources: ServedResources) {
        guard let loop, let socket = makePeerSocket(fd, loop: loop, readSize: 64, on: configuration.clientSocketPath) else { return }
        let connection = ClientConnection(socket: socket, resources: resources) { [unowned self] closed in
            self.clients[ObjectIdentifier(closed)] = nil
        }
        clients[ObjectIdentifier(connection)] = connection
        connection.start()
    }

    private func makePeerSocket(_ fd: OwnedFD, loop: EventLoop, readSize: Int, on path: String) -> PeerSocket? {
        do {
            return try PeerSocket(loop: loop, fd: fd, readSize: readSize)
        } catch {
            report(.acceptFailed(socket: path, error: "\(error)"))
            fd.close()
            return nil
        }
    }
}

/// The version of ivserver, for --version and logs.
public enum IVServerVersion {
    public static let string = "0.1.0"
}
