import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Synchronization
import Testing
@testable import IVServer

/// The test process acting as the VM on the QEMU socket: it holds what
/// QEMU would, per region the peer-0 fd (writing it is a guest doorbell) and
/// the own-vector fd (readable when a host client interrupts the guest).
final class FakeVM {
    let socket: OwnedFD
    /// Message 3's fd: the shared memory behind BAR2.
    let sharedMemory: OwnedFD
    /// Message 4's fds: region i's guest_to_host eventfd.
    var doorbells: [OwnedFD] = []
    /// Message 5's fds: region i's host_to_guest eventfd.
    var ownVectors: [OwnedFD] = []

    init(server: ServerProcess, regionCount: Int) throws {
        socket = try connectClient(server.qemuSocketPath)
        let messages = try readQemuMessages(socket, count: 3 + 2 * regionCount)
        sharedMemory = try #require(messages[2].fd)
        doorbells = try messages[3..<3 + regionCount].map { try #require($0.fd) }
        ownVectors = try messages[3 + regionCount..<3 + 2 * regionCount].map { try #require($0.fd) }
    }

    /// The guest rings region `index` `times` times.
    func ring(_ index: Int, times: Int = 1) throws {
        for _ in 0..<times { try EventFD.signal(doorbells[index]) }
    }
}

/// A thread for blocking work (futex waits, blocking tools) that Swift's
/// cooperative pool must not carry.
final class TestThread: Sendable {
    private let thread: Mutex<pthread_t?> = Mutex(nil)

    init(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        var created = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&created, nil, { context in
            Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed")
        thread.withLock { $0 = created }
    }

    func join() {
        if let running = thread.withLock({ value -> pthread_t? in defer { value = nil }; return value }) {
            pthread_join(running, nil)
        }
    }
}

/// A value several threads update.
final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    var value: Value { storage.withLock { $0 } }
    func update(_ change: (inout Value) -> Void) { storage.withLock { change(&$0) } }
}

/// Polls `condition` every 2 ms for up to `seconds`.
func eventually(seconds: Double = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + seconds
    repeat {
        if try condition() { return true }
        sleep(milliseconds: 2)
    } while monotonicSeconds() < deadline
    return try condition()
}

let ivctlBinary: String = String(ivserverBinary[..<ivserverBinary.lastIndex(of: "/")!]) + "/ivctl"

/// Runs a tool to completion with separate stdout and stderr.
func runTool(_ arguments: [String], timeout: Double = 20) throws -> (status: Int32, output: String, errors: String) {
    let base = "/tmp/ivs-tool-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    defer { unlink(base + ".out"); unlink(base + ".err") }
    let pid = try spawn(arguments, logPath: base + ".out", errorPath: base + ".err")
    guard let status = waitForExit(pid, seconds: timeout) else {
        kill(pid, SIGKILL)
        _ = waitForExit(pid, seconds: 5)
        throw TestFailure("\(arguments) did not exit within \(timeout) s")
    }
    return (status, readText(base + ".out"), readText(base + ".err"))
}

func ivctl(_ arguments: [String], server: ServerProcess? = nil) throws -> (status: Int32, output: String, errors: String) {
    try runTool([ivctlBinary] + arguments + (server.map { ["--client-sock", $0.clientSocketPath] } ?? []))
}

/// The system calls a waiting thread sleeps in: ppoll (an eventfd wait)
/// and futex (a futex word's wait).
enum BlockingCall {
    #if arch(x86_64)
    static let ppoll = 271, futex = 202
    #elseif arch(arm64)
    static let ppoll = 73, futex = 98
    #endif
}

/// The kernel's id of the calling thread (/proc/thread-self is "PID/task/TID").
func currentThreadID() -> pid_t? {
    var target = [CChar](repeating: 0, count: 64)
    let length = readlink("/proc/thread-self", &target, target.count - 1)
    guard length > 0 else { return nil }
    return String(decoding: target[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self).split(separator: "/").last.flatMap { pid_t($0) }
}

/// Waits, with a deadline, until thread `tid` of this process sleeps in
/// system call `call` (its /proc state is S and its syscall file names
/// the call): then what wakes a waiter reaches it while it waits, never
/// before it began to.
func waitUntilSleeping(_ tid: Shared<pid_t?>, in call: Int, seconds: Double = 10) -> Bool {
    eventually(seconds: seconds) {
        guard let tid = tid.value else { return false }
        let stat = readText("/proc/self/task/\(tid)/stat")
        guard let close = stat.lastIndex(of: ")"), stat.index(close, offsetBy: 2) < stat.endIndex else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        let syscall = readText("/proc/self/task/\(tid)/syscall").split(separator: " ").first.flatMap { Int($0) }
        return state == "S" && syscall == call
    }
}
