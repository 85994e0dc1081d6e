import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer
import WireFormat

/// IVClient against the real ivserver binary.
@Suite("Host client library against ivserver", .serialized)
struct ClientTests {
    let plan = LayoutLoader.loadDefault()

    func open(_ region: String, _ server: ServerProcess) throws -> RegionConnection {
        try RegionConnection.open(region: region, socket: server.clientSocketPath)
    }

    func clientError(_ body: () throws -> Void) -> IVClientError? {
        do {
            try body()
            return nil
        } catch let error as IVClientError {
            return error
        } catch {
            Issue.record("not an IVClientError: \(error)")
            return nil
        }
    }

    @Test("every region opens with the layout the server wrote; the regions table equals the layout")
    func openEveryRegion() throws {
        let server = try ServerProcess()
        let expected = LayoutEncoder.header(plan)
        #expect(try RegionConnection.readLayout(socket: server.clientSocketPath) == expected)
        for region in plan.regions {
            let connection = try open(region.name, server)
            #expect(connection.layout == expected)
            #expect(connection.regionIndex == region.index)
            #expect(connection.descriptor == expected.regions[region.index])
            #expect(connection.memory.count == Int(region.size))
            #expect(fcntl(connection.guestToHost.rawValue, F_GETFD) & FD_CLOEXEC != 0, "received fds are close-on-exec")
        }
        #expect(server.stop() == 0)
    }

    @Test("bytes written through one client's mapping are read through another's and through the file")
    func zeroCopy() throws {
        let server = try ServerProcess()
        let writer = try open("e2e_primary", server)
        let reader = try open("e2e_primary", server)
        let data = Int(writer.descriptor.dataOffset)
        let bytes: [UInt8] = Array("hello, guest".utf8)
        try writer.memory.write(bytes, offset: data)
        #expect(try reader.memory.read(offset: data, count: bytes.count) == bytes)
        try writer.memory.store(0xDEAD_BEEF, offset: 100)
        #expect(try reader.memory.load(offset: 100) == 0xDEAD_BEEF)
        var file = [UInt8](repeating: 0, count: bytes.count)
        let fd = Glibc.open(server.sharedMemoryPath, O_RDONLY)
        defer { close(fd) }
        #expect(pread(fd, &file, bytes.count, off_t(Int(writer.descriptor.beginOffset) + data)) == bytes.count)
        #expect(file == bytes)
        // the last byte of the region is reachable, the next is not
        try writer.memory.write([0x5A], offset: writer.memory.count - 1)
        #expect(try reader.memory.read(offset: reader.memory.count - 1, count: 1) == [0x5A])
        let outside = clientError { _ = try writer.memory.read(offset: writer.memory.count, count: 1) }
        #expect(outside?.description == "region 'e2e_primary' at \(server.clientSocketPath): bytes 16384..<16385 are outside the region's 16384 bytes")
        #expect(server.stop() == 0)
    }

    @Test("interruptGuest makes QEMU's own-vector fd readable; the VM's doorbell wakes waitForGuest with the count")
    func interruptsBothWays() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let connection = try open("e2e_secondary", server)
        let index = connection.regionIndex
        try connection.interruptGuest()
        #expect(try waitForEventFD(vm.ownVectors[index], seconds: 5) == 1)
        for other in 0..<plan.regionCount where other != index {
            #expect(try EventFD.drain(vm.ownVectors[other]) == nil, "only region \(index)'s vector")
        }
        #expect(try connection.waitForGuest(timeout: .milliseconds(50)) == nil, "nothing rung yet")
        try vm.ring(index)
        #expect(try connection.waitForGuest(timeout: .seconds(5)) == 1)
        try vm.ring(index, times: 3)
        #expect(try connection.waitForGuest(timeout: .seconds(5)) == 3, "rings coalesce into one count")
        // a ring while waiting: rung only once the waiter sleeps in its poll
        let waiter = Shared<Result<UInt64?, IVClientError>?>(nil)
        let waiterID = Shared<pid_t?>(nil)
        let thread = TestThread {
            waiterID.update { $0 = currentThreadID() }
            let result = Result { () throws(IVClientError) in try connection.waitForGuest(timeout: .seconds(10)) }
            waiter.update { $0 = result }
        }
        #expect(waitUntilSleeping(waiterID, in: BlockingCall.ppoll), "the waiter never slept in its poll")
        try vm.ring(index)
        thread.join()
        #expect(try waiter.value?.get() == 1)
        #expect(server.stop() == 0)
    }

    @Test("futex wait and wake on a region word across two connections")
    func futex() throws {
        let server = try ServerProcess()
        let first = try open("hwcomposer", server)
        let second = try open("hwcomposer", server)
        let word: UInt32 = 64
        #expect(try first.wait(offset: word, expected: 1, timeout: .seconds(1)) == .valueChanged)
        #expect(try first.wait(offset: word, expected: 0, timeout: .milliseconds(20)) == .timedOut)
        let result = Shared<FutexWaitResult?>(nil)
        let thread = TestThread { result.update { $0 = try? first.wait(offset: word, expected: 0, timeout: .seconds(10)) } }
        var woken = 0
        #expect(eventually {
            try! second.memory.store(0, offset: Int(word))
            woken = try! second.wake(offset: word)
            return woken == 1
        }, "the waiter in the other mapping is woken")
        thread.join()
        #expect(result.value == .woken)
        #expect(server.stop() == 0)
    }

    @Test("processSignals: the handler sees each offset, waiters wake, a round trip comes back in host_to_guest")
    func processSignals() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let host = try open("hwcomposer", server)       // g2h: 4 slots at 0, word 16; h2g: 4 slots at 20, word 36
        let guest = try open("hwcomposer", server)      // plays the guest's side of the memory
        // the guest queues 64 (slot 0) and 84 | round trip (slot 1)
        try guest.memory.store(64, offset: 0)
        try guest.memory.store(84 | 1, offset: 4)
        try guest.memory.store(1, offset: 16)
        let waiter = Shared<FutexWaitResult?>(nil)
        let waitError = Shared<String?>(nil)
        let thread = TestThread {
            do {
                let result = try guest.wait(offset: 64, expected: 0, timeout: .seconds(10))  // not under the lock: it is read meanwhile
                waiter.update { $0 = result }
            } catch {
                waitError.update { $0 = "\(error)" }
            }
        }
        var seen: [UInt32] = []
        #expect(try host.processSignals { seen.append($0) } == 2)
        // The waiter may not have been asleep yet at that wake: the guest
        // signals the word again (no round trip) until it is woken.
        #expect(eventually {
            if waiter.value != nil { return true }
            try! guest.memory.store(64, offset: 0)
            try! guest.memory.store(1, offset: 16)
            _ = try! host.processSignals { _ in }
            return waiter.value != nil || waitError.value != nil
        }, "the futex waiter on word 64 was woken")
        thread.join()
        #expect(seen == [64, 84])
        #expect(waiter.value == .woken, "\(waitError.value ?? "")")
        #expect(try (0..<5).map { try guest.memory.load(offset: 4 * $0) } == [0, 0, 0, 0, 0], "table and signal word cleared")
        // the round trip: 84 goes to h2g slot (84 >> 2) & 3 = 1, i.e. 24
        #expect(try guest.memory.load(offset: 24) == 84)
        #expect(try guest.memory.load(offset: 36) == 1)
        #expect(try waitForEventFD(vm.ownVectors[0], seconds: 5) == 1)
        // offsets outside the region are dropped, not handled
        try guest.memory.store(0x10_0000, offset: 8)
        #expect(try host.processSignals { _ in Issue.record("handled an offset outside the region") } == 0)
        #expect(server.stop() == 0)
    }

    @Test("sendSignal queues in host_to_guest, rings once, coalesces, reports a full table")
    func sendSignal() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let host = try open("e2e_manager", server)      // h2g: 2 slots at 12, word 20, vector 6
        try host.sendSignal(offset: 40)                    // slot 0
        try host.sendSignal(offset: 44, roundTrip: true)   // slot 1
        #expect(try host.memory.read(offset: 12, count: 12) == [40, 0, 0, 0, 45, 0, 0, 0, 1, 0, 0, 0])
        #expect(try waitForEventFD(vm.ownVectors[6], seconds: 5) == 1, "one interrupt for both")
        let full = clientError { try host.sendSignal(offset: 48) }
        #expect(full?.kind == .signalTableFull(offset: 48))
        let misaligned = clientError { try host.sendSignal(offset: 42) }
        #expect(misaligned?.kind == .invalidArgument("signal offset 42 is not a non-zero, 4-byte aligned word of the region's 4096 bytes"))
        #expect(server.stop() == 0)
    }

    @Test("the worker handles the guest's signals until stopped, and stops promptly")
    func worker() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let host = try open("fb_broadcast", server)
        let guest = try open("fb_broadcast", server)
        let handled = Shared<[UInt32]>([])
        let worker = try host.startWorker { offset in handled.update { $0.append(offset) } }
        for offset: UInt32 in [100, 200, 300] {
            // guest side: queue, raise the word, ring the doorbell. (The word
            // may still be up: the worker can take an entry between its store
            // and the raise, and clears the word only at its next drain.)
            let outcome = SignalTable(layout: guest.descriptor.guestToHost).send(offset: offset, roundTrip: false, words: guest.memory)
            #expect(outcome == .queued(ring: true) || outcome == .queued(ring: false))
            try vm.ring(guest.regionIndex)
            #expect(eventually { handled.value.last == offset }, "worker handled \(offset)")
        }
        #expect(handled.value == [100, 200, 300])
        let started = monotonicSeconds()
        try worker.stop()
        #expect(monotonicSeconds() - started < 2, "stop does not wait for the guest")
        // The worker's thread is joined: a ring now stays on the eventfd,
        // undrained, and its handler is never called.
        try guest.memory.store(400, offset: 0)
        try vm.ring(guest.regionIndex)
        #expect(try EventFD.drain(host.guestToHost) == 1, "the stopped worker took no ring")
        #expect(handled.value == [100, 200, 300], "nothing handled after stop")
        #expect(server.stop() == 0)
    }

    @Test("the IVClient example of docs/clients.md runs as written")
    func readmeExample() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        // from docs/clients.md, "IVClient", with the socket path of this server
        let region = try RegionConnection.open(region: "e2e_primary",
                                               socket: server.clientSocketPath)
        let data = Int(region.descriptor.dataOffset)

        try region.memory.write(Array("hello".utf8), offset: data)
        try region.memory.store(1, offset: 64)
        let old = try region.memory.compareExchange(expected: 1, desired: 2, offset: 64)

        try region.interruptGuest()
        if let count = try region.waitForGuest(timeout: .seconds(1)) { print("guest rang \(count)×") }

        try region.sendSignal(offset: 64, roundTrip: false)
        let worker = try region.startWorker { offset in print("guest changed word \(offset)") }
        _ = try region.wait(offset: 64, expected: 2, timeout: .seconds(1))
        try worker.stop()
        // what it did
        #expect(old == 1)
        #expect(try region.memory.read(offset: data, count: 5) == Array("hello".utf8))
        #expect(try waitForEventFD(vm.ownVectors[4], seconds: 1) == 1, "interruptGuest rang; sendSignal merged into it, as the guest has not taken it")
        #expect(try region.memory.load(offset: 12) == 64, "64 queued in host_to_guest slot 0")
        #expect(server.stop() == 0)
    }

    @Test("errors name the socket, the region and the cause")
    func errors() throws {
        let directory = TemporaryDirectory()
        let missing = directory.path + "/none.sock"
        var error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: missing) }
        #expect(error?.kind == .socketMissing)
        #expect(error?.description == "\(missing): no such socket; is ivserver running, and is this its --client-sock?")

        // a socket file nobody listens on (what a killed server leaves)
        let dead = directory.path + "/dead.sock"
        _ = try UnixSocket.listen(path: dead)
        error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: dead) }
        #expect(error?.kind == .serverNotListening)

        // a listener that never answers
        let silent = directory.path + "/silent.sock"
        let listener = try UnixSocket.listen(path: silent)
        error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: silent, timeout: .milliseconds(100)) }
        #expect(error?.kind == .timedOut)
        _ = listener

        let server = try ServerProcess()
        error = clientError { _ = try open("nosuch", server) }
        #expect(error?.kind == .unknownRegion(available: plan.regions.map(\.name)))
        #expect(error?.description == "region 'nosuch' at \(server.clientSocketPath): no such region; the layout has: "
            + plan.regions.map(\.name).joined(separator: ", "))
        error = clientError { _ = try open(String(repeating: "x", count: 17), server) }
        #expect(error?.kind == .invalidArgument("a region name is 1 to 16 bytes"))
        #expect(server.stop() == 0)

        // a layout with none of the well-known names: the layout request still explains a refusal
        let custom = try ServerProcess(layoutJSON: unalignedLayoutJSON)
        error = clientError { _ = try open("nosuch", custom) }
        #expect(error?.kind == .unknownRegion(available: ["ring", "odd", "manager", "managed"]))
        #expect(try open("odd", custom).layout.regions.map(\.name) == ["ring", "odd", "manager", "managed"])
        #expect(try RegionConnection.readLayout(socket: custom.clientSocketPath, tryingRegions: ["nosuch", "managed"]).regions.count == 4)
        #expect(custom.stop() == 0)
    }

    @Test("a server that breaks the protocol: a newer version, a wrong number of fds")
    func brokenServers() throws {
        let directory = TemporaryDirectory()
        func fakeServer(_ name: String, reply: @escaping @Sendable (OwnedFD) throws -> Void) throws -> (String, TestThread) {
            let path = directory.path + "/" + name
            let listener = try UnixSocket.listen(path: path)  // used by the thread alone
            let thread = TestThread {
                var entry = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 5000) == 1, case let .accepted(connection)? = try? UnixSocket.accept(listener) else { return }
                _ = fcntl(connection.rawValue, F_SETFL, 0)  // blocking, like a simple server
                try? reply(connection)
                // Closed right after the reply, as ivserver closes after a
                // grant: what was sent (fds too) stays readable, and the
                // client reads to the end of the stream.
                connection.close()
                _ = listener
            }
            return (path, thread)
        }
        let (newer, first) = try fakeServer("newer.sock") { connection in
            try sendAll(connection, [1, 0, 0, 0])
        }
        var error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: newer) }
        #expect(error?.kind == .unsupportedProtocol(serverVersion: 1))
        first.join()

        let (twoFDs, second) = try fakeServer("two.sock") { connection in
            try sendAll(connection, [0, 0, 0, 0])
            _ = try receiveExactly(connection, count: 12, maximumFDs: 0)
            let a = try EventFD.create(), b = try EventFD.create()
            _ = try UnixSocket.send(connection, ArraySlice(HALDProtocol.grantPayload), fds: [a.rawValue, b.rawValue])
        }
        error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: twoFDs) }
        #expect(error?.kind == .protocolViolation("2 fds instead of 3"))
        second.join()

        // a grant whose shared memory holds a layout of another major version
        let memoryPath = directory.path + "/old-layout"
        var header = LayoutEncoder.encode(LayoutLoader.loadDefault())
        header[0] = 1
        header += [UInt8](repeating: 0, count: 4096 - header.count)
        let file = Glibc.open(memoryPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        #expect(header.withUnsafeBytes { write(file, $0.baseAddress, $0.count) } == 4096)
        close(file)
        let (oldLayout, third) = try fakeServer("old.sock") { connection in
            try sendAll(connection, [0, 0, 0, 0])
            _ = try receiveExactly(connection, count: 12, maximumFDs: 0)
            let a = try EventFD.create(), b = try EventFD.create()
            let memory = Glibc.open(memoryPath, O_RDONLY | O_CLOEXEC)
            defer { close(memory) }
            _ = try UnixSocket.send(connection, ArraySlice(HALDProtocol.grantPayload), fds: [a.rawValue, b.rawValue, memory])
        }
        error = clientError { _ = try RegionConnection.open(region: "hwcomposer", socket: oldLayout) }
        #expect(error?.kind == .badLayout(HeaderError(problems: ["layout version 1.0 is not supported (expected 2.x)"])))
        third.join()
    }
}
