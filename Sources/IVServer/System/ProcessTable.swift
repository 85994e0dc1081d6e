import CLinux
import Glibc
import VSoCFormat
import LinuxSystem

/// Facts about processes, from /proc.
enum ProcessTable {
    /// Marks every descriptor above stderr close-on-exec, so a child gets
    /// only its standard streams, whatever our parent let us inherit.
    static func closeInheritedDescriptorsOnExec() {
        guard let directory = opendir("/proc/self/fd") else { return }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// The other processes that hold the file at `path` open or mapped, as
    /// far as /proc lets us see (another user's fds and maps need root).
    static func holders(ofFileAt path: String) -> [Int32] {
        var target = stat()
        guard stat(path, &target) == 0, let processes = opendir("/proc") else { return [] }
        defer { closedir(processes) }
        let me = getpid()
        var found: [Int32] = []
        while let entry = readdir(processes) {
            guard let pid = Int32(entryName(entry)), pid != me else { continue }
            if holdsOpen(pid, target) || maps(pid, target) { found.append(pid) }
        }
        return found.sorted()
    }

    private static func holdsOpen(_ pid: Int32, _ target: stat) -> Bool {
        guard let fds = opendir("/proc/\(pid)/fd") else { return false }
        defer { closedir(fds) }
        while let entry = readdir(fds) {
            let name = entryName(entry)
            guard name != ".", name != ".." else { continue }
            var info = stat()
            if stat("/proc/\(pid)/fd/\(name)", &info) == 0, info.st_dev == target.st_dev, info.st_ino == target.st_ino { return true }
        }
        return false
    }

    /// A line of /proc/PID/maps: address perms offset major:minor inode path.
    private static func maps(_ pid: Int32, _ target: stat) -> Bool {
        guard let bytes = procFile("/proc/\(pid)/maps") else { return false }
        let device = hexDigits(major(target.st_dev), minimumWidth: 2) + ":" + hexDigits(minor(target.st_dev), minimumWidth: 2)
        let inode = String(target.st_ino)
        for line in bytes.split(separator: 10) {
            let fields = line.split(separator: 32, omittingEmptySubsequences: true)
            if fields.count >= 5, String(decoding: fields[3], as: UTF8.self) == device,
               String(decoding: fields[4], as: UTF8.self) == inode { return true }
        }
        return false
    }

    private static func major(_ device: dev_t) -> UInt64 { (UInt64(device) >> 8) & 0xFFF | (UInt64(device) >> 32) & ~0xFFF }
    private static func minor(_ device: dev_t) -> UInt64 { UInt64(device) & 0xFF | (UInt64(device) >> 12) & ~0xFF }

    private static func entryName(_ entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
    }

    /// Replaces this process's image with the binary now at its path (a
    /// newer version, after an upgrade), with the same arguments and pid,
    /// handing it `fds` by name (`IVSERVER_HANDOVER_*`, read by
    /// `ServiceManager.takeHandedDescriptors`). Every other fd is
    /// close-on-exec and goes. Returns only when the exec failed: errno,
    /// with the fds as they were.
    static func reexecute(handing fds: [(name: String, fd: Int32)], child: Int32? = nil) -> Int32 {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0, let arguments = commandLine(of: getpid()), !arguments.isEmpty else { return ENOENT }
        var path = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }  // replaced on disk: run the new one
        for (_, fd) in fds { _ = fcntl(fd, F_SETFD, 0) }
        let handover = fds.map { "\($0.name)=\($0.fd)" }.joined(separator: ":")
        var environment = ProcessEnvironment.current.filter { !$0.hasPrefix("IVSERVER_HANDOVER_") }
        environment += ["IVSERVER_HANDOVER_PID=\(getpid())", "IVSERVER_HANDOVER_FDS=\(handover)"]
        if let child { environment.append("IVSERVER_HANDOVER_CHILD=\(child)") }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        execve(path, argv, envp)
        let failure = errno
        for (_, fd) in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return failure
    }

    /// The VM child that the image before a re-exec started (`ivserver
    /// launch`), if this is the image it handed over to; read once.
    static func takeHandedChild() -> Int32? {
        defer { unsetenv("IVSERVER_HANDOVER_CHILD") }
        guard let value = getenv("IVSERVER_HANDOVER_CHILD"), let owner = getenv("IVSERVER_HANDOVER_PID"),
              Int32(String(cString: owner)) == getpid() else { return nil }
        return Int32(String(cString: value))
    }

    /// When process `pid` started, in clock ticks after boot (field 22 of
    /// /proc/PID/stat), and as seconds since the epoch; nil when /proc
    /// does not say.
    static func startTime(of pid: Int32) -> (ticks: UInt64, epochSecond: Int)? {
        guard pid > 0, let stat = procFile("/proc/\(pid)/stat"),
              let ticks = startTicks(statLine: stat) else { return nil }
        let perSecond = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        return (ticks, bootTime.map { $0 + Int(ticks / perSecond) } ?? 0)
    }

    /// Field 22 of a /proc/PID/stat line: after the command in parentheses
    /// (which may hold spaces and parentheses itself), field 3 on.
    static func startTicks(statLine: [UInt8]) -> UInt64? {
        guard let close = statLine.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = statLine[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (the state): field 22 is fields[19].
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
    }

    /// The boot time, seconds since the epoch ("btime" in /proc/stat).
    private static let bootTime: Int? = {
        guard let bytes = procFile("/proc/stat") else { return nil }
        for line in bytes.split(separator: 10) where line.starts(with: Array("btime ".utf8)) {
            return Int(String(decoding: line.dropFirst(6), as: UTF8.self))
        }
        return nil
    }()

    /// The arguments of process `pid`, if /proc lets us read them.
    static func commandLine(of pid: Int32) -> [String]? {
        guard pid > 0, let bytes = procFile("/proc/\(pid)/cmdline"), !bytes.isEmpty else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    /// A procfs file's contents. procfs answers a read with everything up
    /// to the buffer's size, so one read that does not fill the buffer is
    /// the whole file (a VM's accept path, hence no zeroed 64 KiB buffer
    /// and no second read for the end of file); larger ones are read whole.
    private static func procFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let capacity = 16 << 10
        var count = 0
        let bytes = [UInt8](unsafeUninitializedCapacity: capacity) { buffer, initialized in
            count = Glibc.read(fd, buffer.baseAddress, capacity)
            initialized = max(count, 0)
        }
        close(fd)
        guard count >= 0 else { return nil }
        if count < capacity { return bytes }
        return try? FileContents.read(path: path)
    }
}

/// A process held by a pidfd: it tells whether that very process still
/// runs, so what was read from its /proc entry can be kept while it does
/// (a pid is not reused while its process runs).
final class RunningProcess {
    let pid: Int32
    private let handle: OwnedFD

    /// Nil when the process is gone or pidfds are not available.
    init?(pid: Int32) {
        guard pid > 0 else { return nil }
        let raw = ivs_pidfd_open(pid)
        guard raw >= 0 else { return nil }
        self.pid = pid
        handle = OwnedFD(taking: raw)
    }

    /// False once the process has exited (its pidfd polls readable).
    var isRunning: Bool {
        var entry = pollfd(fd: handle.rawValue, events: Int16(POLLIN), revents: 0)
        return Glibc.poll(&entry, 1, 0) == 0
    }
}
