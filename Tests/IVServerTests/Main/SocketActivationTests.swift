import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer

/// systemd socket activation (ivserver@.socket): the listeners a socket unit
/// hands in (LISTEN_FDS, every fd under the unit's one name) are told apart
/// by the path each is bound to; alone they are a first start, beside the
/// fd store's memory they are a restart that keeps the VM.
@Suite("Socket activation", .serialized)
struct SocketActivationTests {
    let plan = LayoutLoader.loadDefault()

    /// What the store holds with a socket unit: the memory and every eventfd, no listener.
    var storeWithoutListeners: Set<String> { storedNames(of: plan, listeners: false) }

    /// The two listening sockets a socket unit would make in `directory`, as
    /// systemd makes them (0660), in the order the unit lists them.
    func unitListeners(in directory: TemporaryDirectory, clientFirst: Bool = true) throws -> [(name: String, fd: OwnedFD)] {
        let qemu = try UnixSocket.listen(path: directory.path + "/qemu.sock", mode: 0o660)
        let client = try UnixSocket.listen(path: directory.path + "/client.sock", mode: 0o660)
        let both = clientFirst ? [client, qemu] : [qemu, client]
        return both.map { ("ivserver@vm1.socket", $0) }
    }

    func inode(_ fd: OwnedFD) -> UInt64 {
        var info = stat()
        return fstat(fd.rawValue, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test("the unit's listeners alone, under one name, in either order: a first start; they serve; they are not stored, and their files stay at stop",
          arguments: [true, false])
    func firstStart(clientFirst: Bool) throws {
        let directory = TemporaryDirectory()
        let handed = try unitListeners(in: directory, clientFirst: clientFirst)
        let identities = try [directory.path + "/qemu.sock", directory.path + "/client.sock"].map { try FileIdentity.at($0) }
        let manager = try FakeServiceManager()
        let server = try ServerProcess(directory: directory, manager: manager, handing: handed)
        #expect(server.log.contains("serving on \(server.qemuSocketPath), handed in by a socket unit (ivserver@vm1.socket)"), "\(server.log)")
        #expect(server.log.contains("serving on \(server.clientSocketPath), handed in by a socket unit"))
        #expect(!server.log.contains("resumed"), "a first start, not a restart")
        #expect(try manager.waitFor("READY=1"))
        #expect(try manager.waitForStore(storeWithoutListeners), "memory and eventfds stored, not the unit's listeners: \(manager.storedNames)")
        let client = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        #expect(client.layout.regions.count == plan.regionCount)
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        #expect(try manager.waitForStore(storeWithoutListeners.union([Handover.vm])), "the VM's connection is stored")
        vm.socket.close()
        #expect(server.stop() == 0)
        #expect(try [directory.path + "/qemu.sock", directory.path + "/client.sock"].map { try FileIdentity.at($0) } == identities,
                "the unit's socket files are the unit's: untouched")
        // The unit still listens: a connection waits in its backlog for the next server.
        #expect(throws: Never.self) { _ = try UnixSocket.connect(path: directory.path + "/client.sock", nonBlocking: true) }
    }

    @Test("a restart under the socket unit: its listeners and the store's memory, eventfds and VM; the VM and its memory are kept")
    func restart() throws {
        let directory = TemporaryDirectory()
        let listeners = try unitListeners(in: directory)
        let manager = try FakeServiceManager()
        let server = try ServerProcess(directory: directory, manager: manager, handing: listeners)
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        #expect(try manager.waitForStore(storeWithoutListeners.union([Handover.vm])))
        let before = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        try before.memory.write(Array("kept".utf8), offset: 64)
        #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)

        let restarted = try ServerProcess(directory: directory, manager: manager, handing: listeners + manager.handBack())
        #expect(restarted.log.contains("resumed what the previous server process handed over: shared memory inode \(inode(before.sharedMemory))"),
                "\(restarted.log)")
        #expect(restarted.log.contains("VM still attached"))
        #expect(restarted.log.contains("handed in by a socket unit"))
        let after = try RegionConnection.open(region: "e2e_primary", socket: restarted.clientSocketPath)
        #expect(try after.memory.read(offset: 64, count: 4) == Array("kept".utf8))
        #expect(inode(after.sharedMemory) == inode(vm.sharedMemory), "the VM's memory")
        #expect(try manager.waitForStore(storeWithoutListeners.union([Handover.vm])))
        #expect(restarted.stop() == 0)
    }

    @Test("moving to the socket unit: listeners stored by a server without one give way to the unit's and leave the store")
    func storedListenersGiveWay() throws {
        let directory = TemporaryDirectory()
        let manager = try FakeServiceManager()
        let server = try ServerProcess(directory: directory, manager: manager)
        #expect(try manager.waitForStore(storeWithoutListeners.union([Handover.qemuListener, Handover.clientListener])))
        #expect(server.stop(signal: SIGKILL) == 128 + SIGKILL)
        // The socket unit starts: it replaces the files at the same paths.
        unlink(directory.path + "/qemu.sock")
        unlink(directory.path + "/client.sock")
        let listeners = try unitListeners(in: directory)
        let restarted = try ServerProcess(directory: directory, manager: manager, handing: listeners + manager.handBack())
        #expect(restarted.log.contains("handed in by a socket unit"), "\(restarted.log)")
        #expect(try manager.waitForStore(storeWithoutListeners), "the old listeners left the store: \(manager.storedNames)")
        #expect(try RegionConnection.open(region: "e2e_primary", socket: restarted.clientSocketPath).layout.regions.count == plan.regionCount)
        #expect(restarted.stop() == 0)
    }

    @Test("a handed listener on another path, or a foreign fd that is no listener: a warning each, closed, and the server makes its own")
    func strayFDs() throws {
        let directory = TemporaryDirectory()
        let elsewhere = TemporaryDirectory()
        let stray = try UnixSocket.listen(path: elsewhere.path + "/other.sock", mode: 0o660)
        let notASocket = OwnedFD(taking: open("/dev/null", O_RDONLY | O_CLOEXEC))
        let server = try ServerProcess(directory: directory, handing: [("other.socket", stray), ("junk", notASocket)])
        #expect(server.log.contains("closed a handed-in fd (\(elsewhere.path)/other.sock): a listener on a path that is neither --qemu-sock nor --client-sock"),
                "\(server.log)")
        #expect(server.log.contains("closed a handed-in fd (junk): not a listening UNIX socket"))
        #expect(try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath).layout.regions.count == plan.regionCount)
        #expect(server.stop() == 0)
        #expect(!fileExists(server.clientSocketPath), "its own sockets are removed at stop")
    }

    @Test("multi-peer: ivshmem-server@.socket's listener serves two peers, and its file stays at stop")
    func multiPeer() throws {
        let directory = TemporaryDirectory()
        let listener = try UnixSocket.listen(path: directory.path + "/peers.sock", mode: 0o660)
        let server = try ServerProcess(multiPeer: ["-l", "64K", "-n", "2"], directory: directory,
                                       handing: [("ivshmem-server@lab.socket", listener)])
        #expect(server.log.contains("handed in by a socket unit (ivshmem-server@lab.socket)"), "\(server.log)")
        let first = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 0)
        let second = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 1)
        #expect(first.id != second.id)
        #expect(server.stop() == 0)
        #expect(fileExists(directory.path + "/peers.sock"), "the unit's socket file stays")
    }
}
