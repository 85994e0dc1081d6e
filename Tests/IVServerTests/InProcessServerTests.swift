import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Synchronization
import Testing
@testable import IVServer

/// Keeps the server's events for a test (any thread may look).
final class RecordedEvents: EventSink, Sendable {
    private let events = Mutex<[String]>([])
    func record<Event: LogEvent>(_ event: Event) { events.withLock { $0.append(event.description) } }
    func flush() {}
    func isEnabled(_ severity: Severity) -> Bool { true }
    /// Every event's message, in order.
    var all: [String] { events.withLock { $0 } }
    func contains(_ text: String) -> Bool { all.contains { $0.contains(text) } }
}

/// A server run in the test's own process, on a thread of its own:
/// started, served and stopped through its API (no binary, no signals).
final class InProcess<Served: Servable & Sendable> {
    let directory: TemporaryDirectory
    let events: RecordedEvents
    let server: Served
    /// How the server's life ended, once it has.
    private final class Outcome: Sendable {
        let value = Mutex<Result<Void, any Error>?>(nil)
    }
    private let outcome = Outcome()
    private let thread: TestThread

    /// With `faults`, the server's thread meets the faults a test scripts
    /// (InjectedFaults); other in-process servers' threads never do.
    init(faults: Bool = false, _ make: (TemporaryDirectory, RecordedEvents) -> Served) {
        let directory = TemporaryDirectory()
        let events = RecordedEvents()
        self.directory = directory
        self.events = events
        let server = make(directory, events)
        self.server = server
        let outcome = self.outcome
        thread = TestThread {
            // Faults a test scripts are met by the server's calls only.
            if faults { InjectedFaults.enrollCurrentThread() }
            let result = Result { () throws -> Void in
                try server.start()
                defer { server.close() }
                try server.serve(whenReady: { _ in })
            }
            outcome.value.withLock { $0 = result }
        }
    }

    /// Waits until the server is ready (true) or its life ended (false).
    func waitUntilReady() -> Bool {
        eventually(seconds: 10) { events.contains("ready:") || outcome.value.withLock { $0 != nil } } && events.contains("ready:")
    }

    /// How the server's life ended, once it has; with `stopping`, after
    /// asking it to stop (once: a request before it serves is kept).
    func finish(stopping: Bool = true) -> Result<Void, any Error>? {
        if stopping { server.requestStop() }
        thread.join()
        return outcome.value.withLock { $0 }
    }
}

/// The vSoC server in-process, on the default layout.
typealias InProcessServer = InProcess<VSoCServer>

extension InProcess where Served == VSoCServer {
    convenience init(faults: Bool = false) {
        self.init(faults: faults) { directory, events in
            VSoCServer(configuration: VSoCServerConfiguration(
                layout: LayoutLoader.loadDefault(), layoutSource: "test", sharedMemoryPath: directory.path + "/shm",
                qemuSocketPath: directory.path + "/qemu.sock", clientSocketPath: directory.path + "/client.sock",
                accessPolicy: AccessPolicy(serverUID: getuid())), events: events)
        }
    }

    var clientSocketPath: String { directory.path + "/client.sock" }
}

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
        let configuration = VSoCServerConfiguration(
            layout: LayoutLoader.loadDefault(), layoutSource: "test", sharedMemoryPath: directory.path + "/shm",
            qemuSocketPath: directory.path + "/qemu.sock", clientSocketPath: directory.path + "/client.sock",
            accessPolicy: AccessPolicy(serverUID: getuid()))
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
