import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Synchronization
import Testing
@testable import IVServer

@Suite("The server in-process, with failures injected into its system calls", .serialized)
struct InProcessServerTests {
    init() { InjectedFaults.clear() }

    @Test("started, served and stopped through its API: a handshake, then nothing left")
    func servesAndStops() throws {
        let instance = InProcessServer()
        #expect(instance.waitUntilReady())
        #expect(try haldHandshake(instance.clientSocketPath, region: "hwcomposer").fds.count == 3)
        let result = instance.finish()
        #expect(throws: Never.self) { try result?.get() }
        #expect(instance.events.contains("stop requested: stopping"))
        #expect(instance.directory.entries() == [])
    }

    @Test("ENOSPC while sizing the memory: run throws it, naming the path, and nothing is left")
    func noSpaceForTheMemory() throws {
        InjectedFaults.fail(.ftruncate, with: ENOSPC)
        defer { InjectedFaults.clear() }
        let instance = InProcessServer(faults: true)
        let result = instance.finish(stopping: false)
        guard case let .failure(error as SystemError)? = result else {
            Issue.record("run did not fail with a SystemError: \(String(describing: result))")
            return
        }
        #expect(error.errno == ENOSPC)
        #expect("\(error)".contains(instance.directory.path + "/shm"))
        #expect(instance.directory.entries() == [], "left behind: \(instance.directory.entries())")
    }

    @Test("EMFILE on accept: the waiting connection is shed (not spun on), the error logged, the next client served")
    func outOfDescriptorsOnAccept() throws {
        let instance = InProcessServer(faults: true)
        #expect(instance.waitUntilReady())
        InjectedFaults.fail(.accept, with: EMFILE)
        defer { InjectedFaults.clear() }
        let shed = try connectClient(instance.clientSocketPath)
        // Shed: accepted and closed at once, so it reads the end of the stream.
        #expect(try receiveExactly(shed, count: 4, maximumFDs: 0).bytes.isEmpty)
        // The server's thread logs it; the end of stream above says nothing of when.
        let line = "accept on \(instance.clientSocketPath) failed: accept: \(String(cString: strerror(EMFILE)))"
        #expect(eventually { instance.events.contains(line) }, "not logged; events: \(instance.events.all)")
        #expect(try haldHandshake(instance.clientSocketPath, region: "hwcomposer").fds.count == 3)
        #expect(throws: Never.self) { try instance.finish()?.get() }
    }

    @Test("EAGAIN on send: the greeting and then the grant each find the socket full, wait for room and go out whole")
    func socketFullOnSend() throws {
        let instance = InProcessServer(faults: true)
        #expect(instance.waitUntilReady())
        // The server's sends, one by one: the greeting is refused twice, then
        // goes; the grant is refused twice, then goes.
        InjectedFaults.script(.sendmsg, [.fail(EAGAIN), .fail(EAGAIN), .pass, .fail(EAGAIN), .fail(EAGAIN)])
        defer { InjectedFaults.clear() }
        let reply = try haldHandshake(instance.clientSocketPath, region: "gralloc_memory")
        #expect(reply.fds.count == 3 && reply.payload.count == 8)
        #expect(InjectedFaults.remaining(.sendmsg).isEmpty, "every planned EAGAIN was met")
        // Three calls for the greeting, three for the grant, and no other send.
        #expect(InjectedFaults.calls(.sendmsg) == 6)
        #expect(throws: Never.self) { try instance.finish()?.get() }
    }

    @Test("an I/O error reading the handed-over memory is told as one, not as another layout; nothing at the paths changes")
    func handedMemoryUnreadable() throws {
        let directory = TemporaryDirectory()
        let store = RecordingStore()
        let configuration = inProcessConfiguration(directory)
        let first = InProcess<VSoCServer> { _, events in
            VSoCServer(configuration: configuration, events: events, handover: Handover.Source(handed: [:], store: store))
        }
        #expect(first.waitUntilReady())
        #expect(throws: Never.self) { try first.finish()?.get() }
        let entries = directory.entries().sorted()
        // The k-th call of each kind fails, for growing k, until the one
        // on the handed memory does: no failure before it may read as
        // another reason, and that one must read as what it is.
        for call in [SystemCall.fstat, .pread] {
            var told: SystemError?
            for passing in 0..<12 where told == nil {
                InjectedFaults.script(call, Array(repeating: .pass, count: passing) + [.fail(EIO)])
                defer { InjectedFaults.clear() }
                let next = InProcess<VSoCServer>(faults: true) { _, events in
                    VSoCServer(configuration: configuration, events: events, handover: Handover.Source(handed: store.handed(), store: store))
                }
                let result = try #require(next.finish(stopping: false))
                #expect(directory.entries().sorted() == entries, "\(call) #\(passing + 1) failing changed the paths")
                guard case let .failure(failure) = result, let refused = failure as? HandoverError else { continue }
                guard case let .sharedMemoryUnreadable(error) = refused else {
                    Issue.record("\(call) #\(passing + 1) failing was told as: \(refused)")
                    break
                }
                #expect(error.call == call && error.errno == EIO)
                #expect("\(failure)".contains("cannot be read"))
                told = error
            }
            #expect(told != nil, "no failing \(call) was told as the memory being unreadable")
        }
    }
}
