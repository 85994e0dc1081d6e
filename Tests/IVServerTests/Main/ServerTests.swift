import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

let defaultPlan = LayoutLoader.loadDefault()

/// Whole-binary tests: the built `ivserver`, real sockets, real fds.
@Suite("ivserver process", .serialized)
struct ServerTests {
    @Test("start-up: ready line with the paths, shared memory sized, sparse, 0600, header written")
    func startup() throws {
        let server = try ServerProcess()
        #expect(server.log.contains("using the built-in default layout"))
        #expect(server.log.contains("QEMU socket \(server.qemuSocketPath); client socket \(server.clientSocketPath)"))
        #expect(server.log.contains("-device ivshmem-doorbell,chardev=ivsh,vectors=8"))
        var info = stat()
        #expect(stat(server.sharedMemoryPath, &info) == 0)
        #expect(info.st_size == 0x2000_0000)
        #expect(info.st_mode & 0o777 == 0o600)
        // The header's page and the pages of every region's signal tables and
        // interrupt words (taken at start, so that touching them cannot
        // fault on a full tmpfs); the rest is sparse.
        let signallingPages = Set(SignallingReset.signallingRanges(of: defaultPlan).flatMap { ($0.lowerBound / 4096)...(($0.upperBound - 1) / 4096) })
        #expect(!signallingPages.contains(0) && signallingPages.count >= defaultPlan.regionCount)
        // (On ext4, /tmp here, a block of the file's extent tree may count too.)
        let expected = 4096 * (1 + signallingPages.count)
        #expect(info.st_blocks * 512 >= expected && info.st_blocks * 512 <= expected + 8192,
                "only the header's and the signalling pages are allocated (\(expected) bytes), got \(info.st_blocks) blocks")
        let fd = OwnedFD(taking: open(server.sharedMemoryPath, O_RDONLY | O_CLOEXEC))
        var header = [UInt8](repeating: 0xAA, count: 4096)
        #expect(pread(fd.rawValue, &header, header.count, 0) == 4096)
        let encoded = LayoutEncoder.encode(defaultPlan)
        #expect(Array(header[..<encoded.count]) == encoded)
        #expect(header[encoded.count...].allSatisfy { $0 == 0 }, "the rest of the header page is zero")
        #expect(server.stop() == 0)
    }

    @Test("HALD handshake for every region: version 0, 8-byte payload, exactly 3 fds in order")
    func everyRegion() throws {
        let server = try ServerProcess()
        for region in defaultPlan.regions {
            let reply = try haldHandshake(server.clientSocketPath, region: region.name)
            #expect(reply.version == 0)
            #expect(reply.payload == [0, 0, 0, 0, 0, 0, 0, 0], "region \(region.name)")
            #expect(!reply.controlTruncated)
            try #require(reply.fds.count == 3, "region \(region.name) got \(reply.fds.count) fds")
            #expect(fdTarget(reply.fds[0]) == "anon_inode:[eventfd]")
            #expect(fdTarget(reply.fds[1]) == "anon_inode:[eventfd]")
            #expect(sameFile(reply.fds[2], server.sharedMemoryPath), "fd 2 must be the shared-memory file")
            #expect(try !sameEventFD(reply.fds[0], reply.fds[1]), "guest_to_host and host_to_guest must differ")
            #expect(server.waitForLog(containing: "client served region '\(region.name)' (#\(region.index)) to pid \(getpid())"))
        }
        #expect(server.stop() == 0)
    }

    @Test("two clients of one region get the same eventfds; other regions get others")
    func sameObjects() throws {
        let server = try ServerProcess()
        let first = try haldHandshake(server.clientSocketPath, region: "e2e_primary")
        let second = try haldHandshake(server.clientSocketPath, region: "e2e_primary")
        let other = try haldHandshake(server.clientSocketPath, region: "e2e_secondary")
        try #require(first.fds.count == 3 && second.fds.count == 3 && other.fds.count == 3)
        #expect(try sameEventFD(first.fds[0], second.fds[0]))
        #expect(try sameEventFD(second.fds[1], first.fds[1]))
        #expect(try !sameEventFD(first.fds[0], other.fds[0]))
        #expect(try !sameEventFD(first.fds[1], other.fds[1]))
        _ = try EventFD.drain(other.fds[0])
        _ = try EventFD.drain(other.fds[1])
        #expect(server.stop() == 0)
    }

    @Test("refusals close the connection without fds", arguments: [
        ("length 0", [UInt8(0), 0]),
        ("length 17", [17, 0] + Array("seventeen_chars_x".utf8)),
        ("length 0xffff", [0xFF, 0xFF]),
        ("unknown name", [7, 0] + Array("unknown".utf8)),
    ])
    func refusals(label: String, request: [UInt8]) throws {
        let server = try ServerProcess()
        let reply = try haldHandshake(server.clientSocketPath, request: request)
        #expect(reply.version == 0)
        #expect(reply.payload.isEmpty, "\(label): no payload expected")
        #expect(reply.fds.isEmpty, "\(label): no fds expected")
        #expect(server.waitForLog(containing: "client refused (pid \(getpid())"), "\(label)")
        // and the server still serves
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
        #expect(server.stop() == 0)
    }

    @Test("a client that closes early, or vanishes before reading its fds, leaves the server serving")
    func vanishingClients() throws {
        let server = try ServerProcess()
        do {
            let socket = try connectClient(server.clientSocketPath)
            _ = try receiveExactly(socket, count: 4, maximumFDs: 0)
            try sendAll(socket, [5])
        }
        #expect(server.waitForLog(containing: "after 1 of the handshake's bytes"))
        do {
            // closing with the version unread: the server sees EPIPE or a reset
            let socket = try connectClient(server.clientSocketPath)
            try sendAll(socket, [5])
        }
        let deadline = monotonicSeconds() + 10
        while server.log.components(separatedBy: "client refused").count < 3 && monotonicSeconds() < deadline {
            sleep(milliseconds: 5)
        }
        #expect(server.log.components(separatedBy: "client refused").count == 3)
        for _ in 0..<50 {
            let socket = try connectClient(server.clientSocketPath)
            try sendAll(socket, request("hwcomposer"))
            // closed without reading the version or the fds
        }
        for _ in 0..<50 {
            let socket = try connectClient(server.clientSocketPath)
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(socket.rawValue, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            try sendAll(socket, request("fb_broadcast"))
        }
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
        #expect(server.stop() == 0)
    }

    @Test("QEMU protocol: 3+2N messages, 1+2N fds, in order; vectors are the HALD clients' eventfds")
    func qemuProtocol() throws {
        let server = try ServerProcess()
        let regionCount = defaultPlan.regionCount
        let socket = try connectClient(server.qemuSocketPath)
        let messages = try readQemuMessages(socket, count: 3 + 2 * regionCount)
        #expect(messages.map(\.value) == [0, 1024, -1] + Array(repeating: 0, count: regionCount) + Array(repeating: 1024, count: regionCount))
        #expect(messages.map { $0.fd != nil } == [false, false] + Array(repeating: true, count: 1 + 2 * regionCount))
        #expect(sameFile(messages[2].fd!, server.sharedMemoryPath))
        // nothing more is sent (the server logs the VM once its handshake
        // is out), and the connection stays open
        #expect(server.waitForLog(containing: "VM connected (pid \(getpid())"))
        var pending: Int32 = 0
        #expect(ioctl(socket.rawValue, UInt(FIONREAD), &pending) == 0 && pending == 0)
        #expect(!UnixSocket.peerHasHungUp(socket))
        for region in defaultPlan.regions {
            let client = try haldHandshake(server.clientSocketPath, region: region.name)
            try #require(client.fds.count == 3)
            let peerZero = messages[3 + region.index].fd!
            let own = messages[3 + regionCount + region.index].fd!
            #expect(try sameEventFD(peerZero, client.fds[0]), "peer-0 vector \(region.index) is guest_to_host of '\(region.name)'")
            #expect(try sameEventFD(client.fds[1], own), "own vector \(region.index) is host_to_guest of '\(region.name)'")
        }
        #expect(server.waitForLog(containing: "VM connected (pid \(getpid())"))
        #expect(server.stop() == 0)
    }

    @Test("one VM at a time: a second is refused while the first lives; a successor right after a close is served")
    func oneVMAtATime() throws {
        let server = try ServerProcess()
        let count = 3 + 2 * defaultPlan.regionCount
        var first: OwnedFD? = try connectClient(server.qemuSocketPath)
        _ = try readQemuMessages(first!, count: count)
        let second = try connectClient(server.qemuSocketPath)
        let refused = try receiveExactly(second, count: 16, maximumFDs: 2)
        #expect(refused.bytes == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] && refused.fds.isEmpty,
                "a second VM gets only version -1, which QEMU rejects, then a close")
        #expect(server.waitForLog(containing: "refused a second VM connection"))
        // the first keeps its connection
        #expect(!UnixSocket.peerHasHungUp(first!))
        // close the first and connect a successor at once, before the server
        // can have read the first's end of stream
        first = nil
        let third = try connectClient(server.qemuSocketPath)
        let messages = try readQemuMessages(third, count: count)
        #expect(messages.count == count)
        #expect(server.waitForLog(containing: "VM disconnected"))
        #expect(server.stop() == 0)
    }

    @Test("200 silent clients do not delay a real handshake")
    func silentClients() throws {
        // all from this process: room for them (shares are tested apart)
        let server = try ServerProcess(arguments: ["--max-pending-per-process", "1000"])
        let silent = try (0..<200).map { _ in try connectClient(server.clientSocketPath) }
        let reply = try haldHandshake(server.clientSocketPath, region: "gralloc_memory")
        #expect(reply.fds.count == 3)
        #expect(silent.allSatisfy { !UnixSocket.peerHasHungUp($0) }, "served while all 200 silent clients were connected")
        // a slow client, one byte at a time, is served too while they sit there
        let slow = try connectClient(server.clientSocketPath)
        _ = try receiveExactly(slow, count: 4, maximumFDs: 0)
        for byte in request("e2e_managed") {
            try sendAll(slow, [byte])
            sleep(milliseconds: 2)
        }
        #expect(try receiveExactly(slow, count: 16, maximumFDs: 4).fds.count == 3)
        withExtendedLifetime(silent) {}
        #expect(server.stop() == 0)
    }

    @Test("SIGTERM, SIGINT and SIGHUP with a VM and a half-done client: exit 0, nothing left", arguments: [SIGTERM, SIGINT, SIGHUP])
    func stopCleansUp(signal: Int32) throws {
        let server = try ServerProcess()
        let vm = try connectClient(server.qemuSocketPath)
        _ = try readQemuMessages(vm, count: 3)
        let halfDone = try connectClient(server.clientSocketPath)
        try sendAll(halfDone, [3, 0, UInt8(ascii: "h")])
        #expect(server.waitForLog(containing: "VM connected"))
        #expect(server.stop(signal: signal) == 0)
        #expect(server.directory.entries() == [], "left behind: \(server.directory.entries())")
        #expect(server.log.contains("stopping"))
        // the client sees the server go away (an end of stream, or a reset
        // when the server closed before reading its bytes)
        do {
            let rest = try receiveExactly(halfDone, count: 8, maximumFDs: 0)
            #expect(rest.bytes.count <= 4, "the greeting at most, then the end of the stream")
        } catch let error as SystemError where error.errno == ECONNRESET {
            // a reset: the server closed with the client's bytes unread
        }  // a timeout (TestFailure) fails the test: the server did not go away
    }
}
