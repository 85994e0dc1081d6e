import LinuxSystem
@testable import ServerCore
import WireFormat
import Glibc
@testable import IVServer

/// A QEMU started with `-qtest`: CPU stopped (`-accel tcg -S`), driven over
/// QEMU's qtest text protocol (one command per line, answered by "OK …" or
/// "FAIL …"; asynchronous "IRQ …" lines are skipped).
final class QemuProcess {
    static let binary = "qemu-system-x86_64"
    let directory = TemporaryDirectory()
    /// QEMU's own pid (it runs as the child of `timeout`).
    let pid: pid_t
    private let wrapperPID: pid_t
    let logPath: String
    let session: QTestSession
    private var exited = false

    /// Starts QEMU with an ivshmem-doorbell device on `qemuSocket`. QEMU
    /// runs under `timeout`, so it cannot outlive a crashed test run.
    init(qemuSocket: String, vectors: Int?, extraArguments: [String] = []) throws {
        try Self.requireInstalled()
        let qtestSocket = directory.path + "/qtest.sock"
        logPath = directory.path + "/qemu.log"
        let listener = try QTestSession.listen(path: qtestSocket)
        let device = "ivshmem-doorbell,chardev=ivsh" + (vectors.map { ",vectors=\($0)" } ?? "")
        let arguments = [
            "/usr/bin/timeout", "300", Self.binary,
            "-machine", "q35", "-accel", "tcg", "-S", "-display", "none", "-nodefaults",
            "-qtest", "unix:\(qtestSocket)", "-qtest-log", "/dev/null",
            "-chardev", "socket,path=\(qemuSocket),id=ivsh", "-device", device,
        ] + extraArguments
        wrapperPID = try spawn(arguments, logPath: logPath)
        pid = childPID(of: wrapperPID) ?? wrapperPID
        do {
            session = try QTestSession(accepting: listener, log: directory.path + "/qemu.log")
        } catch {
            Glibc.kill(pid, SIGKILL)
            _ = IVServerTests.waitForExit(wrapperPID, seconds: 5)
            throw error
        }
    }

    /// The QEMU tests fail, never skip, when QEMU is missing.
    static func requireInstalled() throws {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        let found = path.split(separator: ":").contains { access("\($0)/\(binary)", X_OK) == 0 }
        guard found else {
            throw TestFailure("\(binary) is not on PATH; install Debian's qemu-system-x86 (make test does it when run as root)")
        }
    }

    deinit {
        if !exited {
            Glibc.kill(pid, SIGKILL)
            _ = IVServerTests.waitForExit(wrapperPID, seconds: 10)
        }
    }

    var log: String { readText(logPath) }

    /// Kills QEMU and reaps it.
    func kill(signal: Int32 = SIGKILL) {
        guard !exited else { return }
        Glibc.kill(pid, signal)
        exited = IVServerTests.waitForExit(wrapperPID, seconds: 10) != nil
    }

    /// Waits for QEMU to exit on its own; its status.
    func waitForExit(seconds: Double) -> Int32? {
        guard !exited else { return nil }
        let status = IVServerTests.waitForExit(wrapperPID, seconds: seconds)
        exited = status != nil
        return status
    }

}

/// One qtest connection: QEMU connects to a socket the test listens on.
final class QTestSession {
    private let connection: OwnedFD
    private var buffer: [UInt8] = []
    private let logPath: String

    static func listen(path: String) throws -> OwnedFD {
        try UnixSocket.listen(path: path, backlog: 1)
    }

    /// Waits (20 s at most) for QEMU to connect. QEMU does so once it has
    /// started, which for an ivshmem-doorbell device means once it has the
    /// shared memory.
    init(accepting listener: OwnedFD, log: String) throws {
        logPath = log
        var entry = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
        guard poll(&entry, 1, 20_000) == 1, case let .accepted(socket) = try UnixSocket.accept(listener) else {
            throw TestFailure("QEMU did not connect to qtest; its log:\n\(readText(log))")
        }
        connection = socket
        let flags = fcntl(socket.rawValue, F_GETFL)
        _ = fcntl(socket.rawValue, F_SETFL, flags & ~O_NONBLOCK)
        try UnixSocket.setTimeouts(socket, seconds: 20)
    }

    var log: String { readText(logPath) }

    // MARK: the qtest protocol

    /// Sends one command and returns the words of its "OK" answer.
    @discardableResult
    func command(_ line: String) throws -> [String] {
        try sendAll(connection, Array((line + "\n").utf8))
        while true {
            let reply = try readLine()
            if reply.hasPrefix("IRQ") { continue }
            let words = reply.split(separator: " ").map(String.init)
            guard words.first == "OK" else { throw TestFailure("qtest '\(line)' answered '\(reply)'") }
            return Array(words.dropFirst())
        }
    }

    private func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeFirst(newline + 1)
                return line
            }
            let chunk = try receiveExactly(connection, count: 1, maximumFDs: 0)
            guard !chunk.bytes.isEmpty else { throw TestFailure("QEMU closed the qtest connection; log:\n\(log)") }
            buffer += chunk.bytes
        }
    }

    private func value(_ words: [String]) throws -> UInt64 {
        guard let word = words.first, word.hasPrefix("0x"), let value = UInt64(word.dropFirst(2), radix: 16) else {
            throw TestFailure("qtest answer without a value: \(words)")
        }
        return value
    }

    func readl(_ address: UInt64) throws -> UInt32 { UInt32(truncatingIfNeeded: try value(command("readl \(hex0x(address))"))) }
    func readq(_ address: UInt64) throws -> UInt64 { try value(command("readq \(hex0x(address))")) }
    func writel(_ address: UInt64, _ value: UInt32) throws { try command("writel \(hex0x(address)) \(hex0x(value))") }
    func writeq(_ address: UInt64, _ value: UInt64) throws { try command("writeq \(hex0x(address)) \(hex0x(value))") }
    func inl(_ port: UInt16) throws -> UInt32 { UInt32(truncatingIfNeeded: try value(command("inl \(hex0x(port))"))) }
    func outl(_ port: UInt16, _ value: UInt32) throws { try command("outl \(hex0x(port)) \(hex0x(value))") }

    /// `count` bytes of guest memory.
    func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        let words = try command("read \(hex0x(address)) \(hex0x(count))")
        guard let text = words.first, text.hasPrefix("0x") else { throw TestFailure("bad read answer \(words)") }
        let digits = Array(text.utf8.dropFirst(2))
        guard digits.count == 2 * count else { throw TestFailure("read returned \(digits.count / 2) bytes, not \(count)") }
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }

    /// Writes bytes into guest memory.
    func write(_ address: UInt64, _ bytes: [UInt8]) throws {
        let text = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        try command("write \(hex0x(address)) \(hex0x(bytes.count)) 0x\(text)")
    }

    // MARK: PCI configuration space (mechanism #1: ports 0xCF8/0xCFC)

    func configRead(device: Int, offset: Int) throws -> UInt32 {
        try outl(0xCF8, configAddress(device: device, offset: offset))
        return try inl(0xCFC)
    }

    func configWrite(device: Int, offset: Int, _ value: UInt32) throws {
        try outl(0xCF8, configAddress(device: device, offset: offset))
        try outl(0xCFC, value)
    }

    private func configAddress(device: Int, offset: Int) -> UInt32 {
        0x8000_0000 | UInt32(device) << 11 | UInt32(offset & ~3)
    }
}

/// The first child of `pid` (from /proc), waiting up to 5 s for it to exist.
func childPID(of pid: pid_t) -> pid_t? {
    let deadline = monotonicSeconds() + 5
    repeat {
        let text = readText("/proc/\(pid)/task/\(pid)/children")
        if let first = text.split(separator: " ").first, let child = pid_t(first) { return child }
        sleep(milliseconds: 1)
    } while monotonicSeconds() < deadline
    return nil
}

/// The ivshmem-doorbell PCI function as a guest driver sets it up.
struct IvshmemDevice {
    static let vendorID: UInt32 = 0x1AF4
    static let deviceID: UInt32 = 0x1110
    // Where this test maps the BARs (free guest-physical space on q35).
    static let registersAddress: UInt64 = 0xFEB0_0000
    static let msixTableAddress: UInt64 = 0xFEB0_1000
    static let sharedMemoryAddress: UInt64 = 0x10_0000_0000
    /// Guest RAM the MSI-X messages write into: vector i writes at +4i.
    static let msiTargetAddress: UInt64 = 0x20_0000
    static let msiDataBase: UInt32 = 0xC0DE_0000

    // BAR0 registers
    static let intrMask: UInt64 = 0
    static let intrStatus: UInt64 = 4
    static let ivPosition: UInt64 = 8
    static let doorbell: UInt64 = 12

    let qemu: QTestSession
    let slot: Int
    /// BAR2's size as the device reports it.
    let sharedMemorySize: UInt64
    let msixVectors: Int

    /// Finds the device on bus 0, sizes and assigns its BARs, enables memory
    /// decoding and bus mastering, and points MSI-X vector i at guest RAM.
    init(qemu: QemuProcess) throws {
        try self.init(session: qemu.session)
    }

    init(session qemu: QTestSession) throws {
        self.qemu = qemu
        var found: Int?
        for slot in 0..<32 where try qemu.configRead(device: slot, offset: 0) == Self.deviceID << 16 | Self.vendorID {
            found = slot
        }
        guard let slot = found else { throw TestFailure("no ivshmem device (1af4:1110) on PCI bus 0") }
        self.slot = slot
        // BAR2 is 64-bit: size it by writing all ones to both halves.
        try qemu.configWrite(device: slot, offset: 0x18, 0xFFFF_FFFF)
        try qemu.configWrite(device: slot, offset: 0x1C, 0xFFFF_FFFF)
        let low = UInt64(try qemu.configRead(device: slot, offset: 0x18) & ~0xF)
        let high = UInt64(try qemu.configRead(device: slot, offset: 0x1C))
        sharedMemorySize = ~(high << 32 | low) &+ 1
        try qemu.configWrite(device: slot, offset: 0x10, UInt32(Self.registersAddress))
        try qemu.configWrite(device: slot, offset: 0x14, UInt32(Self.msixTableAddress))
        try qemu.configWrite(device: slot, offset: 0x18, UInt32(truncatingIfNeeded: Self.sharedMemoryAddress) | 0xC)
        try qemu.configWrite(device: slot, offset: 0x1C, UInt32(Self.sharedMemoryAddress >> 32))
        // command register: memory space + bus master (MSI-X writes are DMA)
        let command = try qemu.configRead(device: slot, offset: 0x04)
        try qemu.configWrite(device: slot, offset: 0x04, command | 0x6)
        // find the MSI-X capability (id 0x11) and enable it
        var pointer = Int(try qemu.configRead(device: slot, offset: 0x34) & 0xFC)
        var msix: Int?
        while pointer != 0 {
            let header = try qemu.configRead(device: slot, offset: pointer)
            if header & 0xFF == 0x11 { msix = pointer }
            pointer = Int((header >> 8) & 0xFC)
        }
        guard let msix else { throw TestFailure("ivshmem device has no MSI-X capability") }
        let control = try qemu.configRead(device: slot, offset: msix)
        msixVectors = Int((control >> 16) & 0x7FF) + 1
        let table = try qemu.configRead(device: slot, offset: msix + 4)
        guard table & 0x7 == 1, table & ~0x7 == 0 else { throw TestFailure("MSI-X table is not at BAR1 offset 0: \(hex0x(table))") }
        for vector in 0..<msixVectors {
            let entry = Self.msixTableAddress + UInt64(16 * vector)
            try qemu.writel(entry, UInt32(Self.msiTargetAddress) + UInt32(4 * vector))  // address low
            try qemu.writel(entry + 4, 0)  // address high
            try qemu.writel(entry + 8, Self.msiDataBase + UInt32(vector))  // data
            try qemu.writel(entry + 12, 0)  // vector control: unmasked
            try qemu.writel(Self.msiTargetAddress + UInt64(4 * vector), 0)
        }
        try qemu.configWrite(device: slot, offset: msix, control | 0x8000_0000)  // MSI-X enable
    }

    func register(_ offset: UInt64) throws -> UInt32 { try qemu.readl(Self.registersAddress + offset) }

    /// Rings the doorbell of `peer`'s vector.
    func ring(peer: UInt32 = 0, vector: UInt32) throws {
        try qemu.writel(Self.registersAddress + Self.doorbell, peer << 16 | vector)
    }

    /// The MSI-X vectors that have written their message since the last call.
    func deliveredVectors() throws -> [Int] {
        var delivered: [Int] = []
        for vector in 0..<msixVectors {
            let address = Self.msiTargetAddress + UInt64(4 * vector)
            let value = try qemu.readl(address)
            if value == Self.msiDataBase + UInt32(vector) { delivered.append(vector) }
            if value != 0 { try qemu.writel(address, 0) }
        }
        return delivered
    }

    /// Waits up to `seconds` for exactly the expected vector to arrive.
    func waitForVectors(_ expected: [Int], seconds: Double = 5) throws -> [Int] {
        let deadline = monotonicSeconds() + seconds
        var seen: [Int] = []
        repeat {
            seen += try deliveredVectors()
            if seen.count >= expected.count { break }
            sleep(milliseconds: 2)
        } while monotonicSeconds() < deadline
        // A stray vector rung with the expected one would show by now: two
        // more qtest round trips are two more turns of QEMU's main loop,
        // and each turn dispatches every eventfd that is ready. (A barrier,
        // not a wait for time.)
        _ = try register(Self.ivPosition)
        _ = try register(Self.ivPosition)
        seen += try deliveredVectors()
        return seen.sorted()
    }
}
