import Descriptors
import Glibc
@testable import IVServer

/// The test playing systemd for a Type=notify service: a datagram socket
/// for NOTIFY_SOCKET that keeps the fds sent with FDSTORE=1 by FDNAME,
/// drops them on FDSTOREREMOVE=1, and hands them all back for a restart.
final class FakeServiceManager {
    let directory = TemporaryDirectory()
    var socketPath: String { directory.path + "/notify.sock" }
    private let socket: OwnedFD
    private struct State {
        /// The store, in the order the fds came.
        var stored: [(name: String, fd: OwnedFD)] = []
        /// Every notification's text, in order.
        var messages: [String] = []
        var running = true
    }
    private let state = Shared(State())
    /// Reads as systemd does, at once: the server's notifications wait for
    /// room when nobody reads (the queue holds about ten).
    private let reader: TestThread

    init() throws {
        let raw = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw TestFailure("socket: \(errno)") }
        let socket = OwnedFD(taking: raw)
        self.socket = socket
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array((directory.path + "/notify.sock").utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: path + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(raw, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw TestFailure("bind: \(errno)") }
        let state = self.state
        reader = TestThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while state.value.running {
                var entry = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 20) == 1 else { continue }
                let result = buffer.withUnsafeMutableBytes { try? UnixSocket.receive(socket, into: $0, maximumFDs: 16) }
                guard case let .data(count, fds, _)? = result else { continue }
                Self.apply(String(decoding: buffer[..<count], as: UTF8.self), fds: fds, to: state)
            }
        }
    }

    deinit {
        state.update { $0.running = false }
        reader.join()
    }

    private static func apply(_ text: String, fds: [OwnedFD], to state: Shared<State>) {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        let name = fields["FDNAME"] ?? "stored"
        state.update { state in
            state.messages.append(text)
            if fields["FDSTOREREMOVE"] == "1" { state.stored.removeAll { $0.name == name } }
            if fields["FDSTORE"] == "1" { state.stored += fds.map { (name, $0) } }
        }
    }

    var environment: [String] { ["NOTIFY_SOCKET=\(socketPath)"] }
    var stored: [(name: String, fd: OwnedFD)] { state.value.stored }
    var storedNames: [String] { stored.map(\.name) }
    var messages: [String] { state.value.messages }

    /// Waits until a notification contains `text`.
    func waitFor(_ text: String, seconds: Double = 10) throws -> Bool {
        eventually(seconds: seconds) { messages.contains { $0.contains(text) } }
    }

    /// Waits until the store holds exactly `names`, once each.
    func waitForStore(_ names: Set<String>, seconds: Double = 10) throws -> Bool {
        eventually(seconds: seconds) {
            let stored = storedNames
            return Set(stored) == names && stored.count == names.count
        }
    }

    /// What a restart hands to the new process: the whole store.
    func handBack() -> [(name: String, fd: OwnedFD)] { stored }
}
