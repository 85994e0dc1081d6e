import WireFormat
import LinuxSystem
@testable import ServerCore
import CLinux
import Glibc
@testable import IVServer

/// The test playing systemd for a Type=notify service: a datagram socket
/// for NOTIFY_SOCKET whose fd store behaves as systemd 252's does:
/// - only the main process is heard (NotifyAccess=main; the kernel's
///   SCM_CREDENTIALS say who sent a message);
/// - FDSTORE=1 keeps the fds by FDNAME, newest first (what a restart
///   hands back in LISTEN_FDS order), dropping one that is the same open
///   file as an fd already stored;
/// - a stored fd that hangs up or fails (the VM's connection when QEMU
///   goes) is dropped;
/// - FDSTOREREMOVE=1 drops the fds of that name.
final class FakeServiceManager {
    let directory = TemporaryDirectory()
    var socketPath: String { directory.path + "/notify.sock" }
    private let socket: OwnedFD
    private struct State {
        /// The store, newest first.
        var stored: [(name: String, fd: OwnedFD)] = []
        /// Every notification's text from the main process, in order.
        var messages: [String] = []
        /// Messages from processes other than the main one (dropped).
        var ignored: [(pid: Int32, text: String)] = []
        /// Messages that came before the main process was known.
        var early: [(pid: Int32, text: String, fds: [OwnedFD])] = []
        var mainPID: Int32?
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
        try UnixSocket.passCredentials(socket)
        let state = self.state
        reader = TestThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while state.value.running {
                // The notify socket, and every stored fd for a hang-up or an
                // error only (systemd watches them with no events asked).
                let stored = state.value.stored.compactMap { $0.fd.withDescriptor { $0 } }
                var entries = [pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)]
                    + stored.map { pollfd(fd: $0, events: 0, revents: 0) }
                guard poll(&entries, nfds_t(entries.count), 20) > 0 else { continue }
                let hungUp = Set(entries.dropFirst().filter { $0.revents & Int16(POLLHUP | POLLERR) != 0 }.map(\.fd))
                if !hungUp.isEmpty {
                    state.update { $0.stored.removeAll { entry in entry.fd.withDescriptor { hungUp.contains($0) } ?? true } }
                }
                guard entries[0].revents & Int16(POLLIN) != 0 else { continue }
                var sender: PeerCredentials?
                let result = buffer.withUnsafeMutableBytes { try? UnixSocket.receive(socket, into: $0, maximumFDs: 253, sender: &sender) }
                guard case let .data(count, fds, _)? = result else { continue }
                Self.receive(String(decoding: buffer[..<count], as: UTF8.self), fds: fds, from: sender?.pid ?? 0, into: state)
            }
        }
    }

    deinit {
        state.update { $0.running = false }
        reader.join()
    }

    /// The service's main process: only its messages count. Messages that
    /// came before it was named are applied now if they are its own.
    var mainPID: Int32? {
        get { state.value.mainPID }
        set {
            state.update { state in
                state.mainPID = newValue
                let early = state.early
                state.early = []
                for message in early {
                    if message.pid == newValue {
                        Self.apply(message.text, fds: message.fds, to: &state)
                    } else {
                        state.ignored.append((message.pid, message.text))
                    }
                }
            }
        }
    }

    private static func receive(_ text: String, fds: [OwnedFD], from pid: Int32, into state: Shared<State>) {
        state.update { state in
            guard let main = state.mainPID else {
                state.early.append((pid, text, fds))
                return
            }
            guard pid == main else {
                state.ignored.append((pid, text))
                return
            }
            apply(text, fds: fds, to: &state)
        }
    }

    private static func apply(_ text: String, fds: [OwnedFD], to state: inout State) {
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        let name = fields["FDNAME"] ?? "stored"
        state.messages.append(text)
        if fields["FDSTOREREMOVE"] == "1" { state.stored.removeAll { $0.name == name } }
        guard fields["FDSTORE"] == "1" else { return }
        for fd in fds {
            let duplicate = state.stored.contains { entry in
                entry.fd.withDescriptor { stored in ivs_same_open_file(stored, fd.rawValue) == 0 } ?? false
            }
            if !duplicate { state.stored.insert((name, fd), at: 0) }
        }
    }

    var environment: [String] { ["NOTIFY_SOCKET=\(socketPath)"] }
    var stored: [(name: String, fd: OwnedFD)] { state.value.stored }
    var storedNames: [String] { stored.map(\.name) }
    var messages: [String] { state.value.messages }
    /// Messages from processes other than the main one, which were dropped.
    var ignored: [(pid: Int32, text: String)] { state.value.ignored }

    /// Waits until a notification contains `text`.
    func waitFor(_ text: String, seconds: Double = 10) throws -> Bool {
        eventually(seconds: seconds) { messages.contains { $0.contains(text) } }
    }

    /// Waits until the store holds exactly `names`, once each (a
    /// listener's name counted without its socket file's identity).
    func waitForStore(_ names: Set<String>, seconds: Double = 10) throws -> Bool {
        eventually(seconds: seconds) {
            let stored = storedNames.map(Self.kind)
            return Set(stored) == names && stored.count == names.count
        }
    }

    /// A stored name without what follows its kind ("ivs-qemu-listen@8.17" is "ivs-qemu-listen").
    static func kind(_ name: String) -> String {
        Handover.parseListener(name)?.base ?? name
    }

    /// What a restart hands to the new process: the whole store, newest first.
    func handBack() -> [(name: String, fd: OwnedFD)] { stored }
}

/// What a server of `plan` keeps in the fd store: the memory, every eventfd
/// and, unless a socket unit hands them in, both listeners.
func storedNames(of plan: LayoutPlan, listeners: Bool) -> Set<String> {
    var names: Set<String> = [Handover.sharedMemory]
    if listeners { names.formUnion([Handover.qemuListener, Handover.clientListener]) }
    for region in 0..<plan.regionCount {
        names.insert(Handover.guestToHost(region))
        names.insert(Handover.hostToGuest(region))
    }
    return names
}
