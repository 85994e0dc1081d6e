import Glibc
import LinuxSystem
@testable import ServerCore
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

/// The default layout served from `directory` (shm, qemu.sock, client.sock), to this user.
func inProcessConfiguration(_ directory: TemporaryDirectory) -> VSoCServerConfiguration {
    VSoCServerConfiguration(
        layout: LayoutLoader.loadDefault(), layoutSource: "test", sharedMemoryPath: directory.path + "/shm",
        qemuSocketPath: directory.path + "/qemu.sock", clientSocketPath: directory.path + "/client.sock",
        accessPolicy: AccessPolicy(serverUID: getuid()))
}

extension InProcess where Served == VSoCServer {
    /// In a directory of its own, handed `handover`.
    convenience init(faults: Bool = false, handover: Handover.Source = .none) {
        self.init(faults: faults) { directory, events in
            VSoCServer(configuration: inProcessConfiguration(directory), events: events, handover: handover)
        }
    }

    var clientSocketPath: String { directory.path + "/client.sock" }
}

/// A store the server writes to in-process, as a service manager's fd
/// store would keep fds: copies of them by name, newest last.
final class RecordingStore: DescriptorStore, Sendable {
    private let entries = Mutex<[(name: String, fd: Int32)]>([])
    private let calls = Mutex<[String]>([])

    func store(_ items: [(name: String, fd: Int32)]) -> [String] {
        entries.withLock { entries in
            for item in items {
                Self.drop(item.name, from: &entries)
                entries.append((item.name, dup(item.fd)))
            }
        }
        calls.withLock { $0 += items.map { "store \($0.name)" } }
        return []
    }

    func remove(name: String) {
        entries.withLock { Self.drop(name, from: &$0) }
        calls.withLock { $0.append("remove \(name)") }
    }

    /// A name is stored once: storing it again replaces (and closes) the old copy.
    private static func drop(_ name: String, from entries: inout [(name: String, fd: Int32)]) {
        for entry in entries where entry.name == name { close(entry.fd) }
        entries.removeAll { $0.name == name }
    }

    var names: Set<String> { Set(entries.withLock { $0.map(\.name) }) }
    /// What the store was asked, in order.
    var requests: [String] { calls.withLock { $0 } }

    /// What the next process would be handed: fresh copies, by name.
    func handed() -> [String: [OwnedFD]] {
        entries.withLock { entries in
            var handed: [String: [OwnedFD]] = [:]
            for entry in entries { handed[entry.name, default: []].append(OwnedFD(taking: dup(entry.fd))) }
            return handed
        }
    }

    deinit { entries.withLock { $0.forEach { close($0.fd) } } }
}
