import Glibc

/// Facts about processes, from /proc.
package enum ProcFS {
    /// The other processes that hold the file at `path` open or mapped, as
    /// far as /proc lets us see (another user's fds and maps need root).
    package static func holders(ofFileAt path: String) -> [Int32] {
        guard let target = try? Posix.pathStatus(path) else { return [] }
        let me = getpid()
        return entries(of: "/proc").compactMap(Int32.init).filter { pid in
            pid != me && (holdsOpen(pid, target) || maps(pid, target))
        }.sorted()
    }

    private static func holdsOpen(_ pid: Int32, _ target: stat) -> Bool {
        entries(of: "/proc/\(pid)/fd").contains { name in
            // An fd closed meanwhile, or a process that is not ours: not a holder.
            guard let info = try? Posix.pathStatus("/proc/\(pid)/fd/\(name)") else { return false }
            return info.st_dev == target.st_dev && info.st_ino == target.st_ino
        }
    }

    /// A line of /proc/PID/maps: address perms offset major:minor inode path.
    private static func maps(_ pid: Int32, _ target: stat) -> Bool {
        guard let bytes = FileContents.procEntry("/proc/\(pid)/maps") else { return false }
        let device = hex(major(target.st_dev)) + ":" + hex(minor(target.st_dev))
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

    /// Lowercase hex, at least two digits (as /proc/PID/maps writes devices).
    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return digits.count < 2 ? "0" + digits : digits
    }

    /// The names in a directory, without "." and "..": empty when it
    /// cannot be read.
    package static func entries(of path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The arguments of process `pid`, if /proc lets us read them.
    package static func commandLine(of pid: Int32) -> [String]? {
        guard pid > 0, let bytes = FileContents.procEntry("/proc/\(pid)/cmdline"), !bytes.isEmpty else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }

    /// "4242 (qemu-system-x86_64 -machine q35)": a process and the start of
    /// its command line, for messages ("?" when /proc does not say).
    package static func describe(_ pid: Int32) -> String {
        "\(pid) (\(commandLine(of: pid).map { $0.prefix(3).joined(separator: " ") } ?? "?"))"
    }

    /// When process `pid` started, in clock ticks after boot (field 22 of
    /// /proc/PID/stat), and as seconds since the epoch; nil when /proc
    /// does not say.
    package static func startTime(of pid: Int32) -> (ticks: UInt64, epochSecond: Int)? {
        guard pid > 0, let stat = FileContents.procEntry("/proc/\(pid)/stat"), let ticks = startTicks(statLine: stat) else { return nil }
        let perSecond = UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1))
        return (ticks, bootTime.map { $0 + Int(ticks / perSecond) } ?? 0)
    }

    /// Field 22 of a /proc/PID/stat line: after the command in parentheses
    /// (which may hold spaces and parentheses itself), field 3 on.
    package static func startTicks(statLine: [UInt8]) -> UInt64? {
        guard let close = statLine.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = statLine[(close + 1)...].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (the state): field 22 is fields[19].
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
    }

    /// The boot time, seconds since the epoch ("btime" in /proc/stat).
    private static let bootTime: Int? = {
        guard let bytes = FileContents.procEntry("/proc/stat") else { return nil }
        for line in bytes.split(separator: 10) where line.starts(with: Array("btime ".utf8)) {
            return Int(String(decoding: line.dropFirst(6), as: UTF8.self))
        }
        return nil
    }()

    /// What fd `fd` of this process is ("anon_inode:[eventfd]", a path, …).
    package static func target(ofDescriptor fd: Int32) -> String? {
        Posix.linkTarget("/proc/self/fd/\(fd)")
    }
}
