import Glibc

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

    /// The arguments of process `pid`, if /proc lets us read them.
    static func commandLine(of pid: Int32) -> [String]? {
        guard pid > 0, let bytes = try? FileContents.read(path: "/proc/\(pid)/cmdline"), !bytes.isEmpty else { return nil }
        return bytes.split(separator: 0, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) }
    }
}

/// This process's environment as "NAME=value" entries.
public enum ProcessEnvironment {
    public static var current: [String] {
        var entries: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(String(cString: entry))
            pointer += 1
        }
        return entries
    }
}

/// The group database and the standard error stream, for the command line.
public enum HostSystem {
    /// The id of a group given by name, if the system knows it.
    public static func groupID(named name: String) -> UInt32? {
        getgrnam(name).map { $0.pointee.gr_gid }
    }

    /// Writes `text` to fd 2 in one call (the `stderr` FILE is a global
    /// Swift 6 rejects, and log lines should not interleave).
    public static func writeToStandardError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}
