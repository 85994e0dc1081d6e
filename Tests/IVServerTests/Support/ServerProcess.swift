import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The `ivserver` binary next to the test bundle (IVSERVER_BINARY overrides).
let ivserverBinary: String = {
    if let override = getenv("IVSERVER_BINARY") { return String(cString: override) }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(length > 0, "cannot find the test executable")
    let executable = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(executable[..<executable.lastIndex(of: "/")!]) + "/ivserver"
}()

/// A fresh directory under /tmp, removed with everything in it at the end.
final class TemporaryDirectory {
    let path: String

    init() {
        var template = Array("/tmp/ivs-test-XXXXXX".utf8CString)
        let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(result != nil, "mkdtemp failed")
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        for entry in entries() { unlink(path + "/" + entry) }
        rmdir(path)
    }

    func entries() -> [String] { directoryEntries(path) }
}

/// The names in a directory, sorted, without "." and "..".
func directoryEntries(_ path: String) -> [String] {
    ProcFS.entries(of: path).sorted()
}

func fileExists(_ path: String) -> Bool {
    var info = stat()
    return lstat(path, &info) == 0
}

extension String {
    func components(separatedBy separator: String) -> [Substring] {
        var parts: [Substring] = []
        var rest = self[...]
        while let range = rest.firstRange(of: separator) {
            parts.append(rest[..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        return parts + [rest]
    }
}

func sleep(milliseconds: Int) {
    usleep(useconds_t(milliseconds * 1000))
}

/// Spawns `arguments` with stdout going to `logPath` and stderr to
/// `errorPath` (by default the same file). The child inherits the test
/// runner's blocked signals unless `defaultSignals`, as from a shell.
/// `environment` is added to the test runner's; `passing` become the
/// child's fds 3, 4, … (as a service manager hands them over).
func spawn(_ arguments: [String], logPath: String, errorPath: String? = nil, defaultSignals: Bool = false,
           environment: [String] = [], passing: [OwnedFD] = []) throws -> pid_t {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    if defaultSignals {
        var none = sigset_t()
        var handled = sigset_t()
        sigemptyset(&none)
        sigemptyset(&handled)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE] { sigaddset(&handled, signal) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &handled)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    if let errorPath {
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    } else {
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    // Through numbers no source uses, so that no move overwrites a source.
    for (index, fd) in passing.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd.rawValue, Int32(2000 + index)) }
    for index in passing.indices {
        posix_spawn_file_actions_adddup2(&actions, Int32(2000 + index), Int32(3 + index))
        posix_spawn_file_actions_addclose(&actions, Int32(2000 + index))
    }
    let argv = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    var inherited: [String] = []
    var entry = environ
    while let variable = entry.pointee {
        inherited.append(String(cString: variable))
        entry += 1
    }
    let overridden = Set(environment.map { $0.prefix { $0 != "=" } })
    let envp = (inherited.filter { !overridden.contains($0.prefix { $0 != "=" }) } + environment).map { strdup($0) } + [nil]
    defer { envp.forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
    guard result == 0 else { throw TestFailure("posix_spawn \(arguments[0]): \(String(cString: strerror(result)))") }
    return pid
}

/// Waits for `pid` to exit; its exit code, or 128+signal, or nil on timeout.
func waitForExit(_ pid: pid_t, seconds: Double) -> Int32? {
    let deadline = monotonicSeconds() + seconds
    while true {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid {
            return Termination(waitStatus: status).shellStatus
        }
        if monotonicSeconds() > deadline { return nil }
        sleep(milliseconds: 5)
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func readText(_ path: String) -> String {
    (try? FileContents.read(path: path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

func writeText(_ text: String, to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    var text = text
    text.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// Runs the binary to completion: its exit status and combined output.
func runIVServer(_ arguments: [String], in directory: TemporaryDirectory, timeout: Double = 20) throws -> (status: Int32, output: String) {
    let log = "/tmp/ivs-run-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
    defer { unlink(log) }
    let pid = try spawn([ivserverBinary] + arguments, logPath: log)
    guard let status = waitForExit(pid, seconds: timeout) else {
        kill(pid, SIGKILL)
        _ = waitForExit(pid, seconds: 5)
        throw TestFailure("ivserver \(arguments) did not exit within \(timeout) s")
    }
    return (status, readText(log))
}

/// A running `ivserver` on paths inside its own temporary directory; the
/// log is kept outside it, so the directory holds only what the server made.
final class ServerProcess {
    let directory: TemporaryDirectory
    let sharedMemoryPath: String
    var qemuSocketPath: String { directory.path + "/qemu.sock" }
    var clientSocketPath: String { directory.path + "/client.sock" }
    let logPath = "/tmp/ivs-server-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
    let layoutPath = "/tmp/ivs-layout-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
    private(set) var pid: pid_t = 0
    private var exited = false

    /// Starts the server and waits for its `ready` line. `directory`: the
    /// paths of an earlier server (a restart). `handing` (named fds) are
    /// handed over as systemd does: fds 3… with LISTEN_FDS, LISTEN_FDNAMES
    /// and LISTEN_PID (set by a shell that then execs the server).
    /// With `manager`, the server runs under that service manager as its
    /// main process (NOTIFY_SOCKET).
    init(layoutJSON: String? = nil, arguments: [String] = [], directory: TemporaryDirectory? = nil,
         sharedMemoryPath: String? = nil, manager: FakeServiceManager? = nil,
         environment: [String] = [], handing: [(name: String, fd: OwnedFD)] = [], waitForReady: Bool = true) throws {
        self.directory = directory ?? TemporaryDirectory()
        self.sharedMemoryPath = sharedMemoryPath ?? self.directory.path + "/shm"
        var command = [ivserverBinary, "--shm-path", self.sharedMemoryPath, "--qemu-sock", qemuSocketPath,
                       "--client-sock", clientSocketPath, "--log-level", "debug"]
        if let layoutJSON {
            writeText(layoutJSON, to: layoutPath)
            command += ["--layout", layoutPath]
        }
        var environment = environment + (manager?.environment ?? [])
        if !handing.isEmpty {
            command = ["/bin/sh", "-c", "LISTEN_PID=$$ exec \"$@\"", "sh"] + command
            environment += ["LISTEN_FDS=\(handing.count)", "LISTEN_FDNAMES=" + handing.map(\.name).joined(separator: ":")]
        }
        pid = try spawn(command + arguments, logPath: logPath, environment: environment, passing: handing.map(\.fd))
        manager?.mainPID = pid
        guard waitForReady else { return }
        guard waitForLog(containing: "ready:", seconds: 20) else {
            stop(signal: SIGKILL)
            throw TestFailure("ivserver did not become ready; log:\n\(log)")
        }
    }

    /// The multi-peer mode's socket, and its POSIX shared-memory name
    /// (unique, so tests never meet each other's memory).
    var peerSocketPath: String { directory.path + "/peers.sock" }
    let sharedMemoryName = "ivs-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    var sharedMemoryObjectPath: String { "/dev/shm/" + sharedMemoryName }

    /// Starts `ivserver multi-peer -F` on `peerSocketPath` and
    /// `sharedMemoryName` (unless `arguments` give -m) and waits for its
    /// `ready` line.
    init(multiPeer arguments: [String], directory: TemporaryDirectory? = nil, handing: [(name: String, fd: OwnedFD)] = [],
         waitForReady: Bool = true) throws {
        self.directory = directory ?? TemporaryDirectory()
        sharedMemoryPath = self.directory.path + "/shm"
        var command = [ivserverBinary, "multi-peer", "-F", "-S", peerSocketPath, "--log-level", "debug"]
        if !arguments.contains("-m") { command += ["-M", sharedMemoryName] }
        var environment: [String] = []
        if !handing.isEmpty {
            command = ["/bin/sh", "-c", "LISTEN_PID=$$ exec \"$@\"", "sh"] + command
            environment = ["LISTEN_FDS=\(handing.count)", "LISTEN_FDNAMES=" + handing.map(\.name).joined(separator: ":")]
        }
        pid = try spawn(command + arguments, logPath: logPath, environment: environment, passing: handing.map(\.fd))
        guard waitForReady else { return }
        guard waitForLog(containing: "ready:", seconds: 20) else {
            stop(signal: SIGKILL)
            throw TestFailure("ivserver multi-peer did not become ready; log:\n\(log)")
        }
    }

    deinit {
        if !exited { stop(signal: SIGKILL) }
        unlink(logPath)
        unlink(layoutPath)
    }

    var log: String { readText(logPath) }

    /// Where the log ends now, for `waitForLog(containing:after:)`.
    func logMark() -> Int {
        var info = stat()
        return stat(logPath, &info) == 0 ? Int(info.st_size) : 0
    }

    /// The log from byte `mark` on.
    func log(after mark: Int) -> String {
        let fd = open(logPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var offset = mark
        while true {
            let count = pread(fd, &chunk, chunk.count, off_t(offset))
            guard count > 0 else { break }
            bytes += chunk[..<count]
            offset += count
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Waits for `text` in what the log gained after `mark` (only that
    /// is read each time: a busy server's whole log is large).
    func waitForLog(containing text: String, after mark: Int = 0, seconds: Double = 10) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            if log(after: mark).contains(text) { return true }
            if exited { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                exited = true
                return log(after: mark).contains(text)
            }
            sleep(milliseconds: 5)
        }
        return false
    }

    /// Waits for the server to exit on its own; its status.
    func waitForExit(seconds: Double) -> Int32? {
        guard !exited else { return nil }
        let status = IVServerTests.waitForExit(pid, seconds: seconds)
        if status != nil { exited = true }
        return status
    }

    /// Sends `signal` and waits for the exit status.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, seconds: Double = 10) -> Int32? {
        guard !exited else { return nil }
        kill(pid, signal)
        let status = IVServerTests.waitForExit(pid, seconds: seconds)
        if status != nil { exited = true }
        return status
    }

    /// Open file descriptors of the server process.
    /// What each open fd refers to ("socket:[…]", "anon_inode:[pidfd]", a path).
    func openFDTargets() -> [String] {
        openFDTargetsOfProcess(pid)
    }

    func openFDCount() -> Int {
        guard let directory = opendir("/proc/\(pid)/fd") else { return -1 }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        return count - 2
    }
}

/// What each open fd of process `pid` refers to, from /proc/PID/fd.
func openFDTargetsOfProcess(_ pid: Int32) -> [String] {
    guard let directory = opendir("/proc/\(pid)/fd") else { return [] }
    defer { closedir(directory) }
    var targets: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        guard name != ".", name != ".." else { continue }
        var buffer = [CChar](repeating: 0, count: 256)
        let count = readlink("/proc/\(pid)/fd/\(name)", &buffer, buffer.count - 1)
        if count > 0 { targets.append(String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
    }
    return targets
}
