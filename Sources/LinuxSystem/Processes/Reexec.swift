import Glibc

/// Executing this process's binary again in place (same pid, same
/// arguments), handing the new image named fds, and what the new image
/// reads back. The names travel in `IVSERVER_HANDOVER_FDS`
/// ("name=fd:name=fd"), for this pid only (`IVSERVER_HANDOVER_PID`), and
/// are read by `ServiceManager.takeHandedDescriptors`.
package enum Reexec {
    /// Replaces this process's image with the binary now at its path (a
    /// newer version, after an upgrade), handing it `fds` and, when given,
    /// the pid of a child it is to watch on. Every other fd is
    /// close-on-exec and goes. Returns only when the exec failed: the
    /// error, with the fds as they were.
    package static func execute(handing fds: [(name: String, fd: Int32)], child: Int32? = nil) -> SystemError {
        guard var path = selfPath(),
              let arguments = ProcFS.commandLine(of: getpid()), !arguments.isEmpty
        else { return SystemError(.execve, "find this binary", errno: ENOENT) }
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }  // replaced on disk: run the new one
        do {
            for (_, fd) in fds { try Posix.setCloseOnExec(fd, false) }
        } catch {
            for (_, fd) in fds { try? Posix.setCloseOnExec(fd) }
            return error
        }
        let handover = fds.map { "\($0.name)=\($0.fd)" }.joined(separator: ":")
        var environment = ProcessEnvironment.current.filter { !$0.hasPrefix("IVSERVER_HANDOVER_") }
        environment += ["IVSERVER_HANDOVER_PID=\(getpid())", "IVSERVER_HANDOVER_FDS=\(handover)"]
        if let child { environment.append("IVSERVER_HANDOVER_CHILD=\(child)") }
        let failure = Posix.execute(path, arguments: arguments, environment: environment)
        // Still this image: the fds stay ours alone.
        for (_, fd) in fds { try? Posix.setCloseOnExec(fd) }
        return failure
    }

    private static func selfPath() -> String? { Posix.linkTarget("/proc/self/exe") }

    /// The child that the image before a re-exec asked this one to watch
    /// (`ivserver launch`'s VM), if this is the image it handed over to;
    /// read once.
    package static func takeHandedChild() -> Int32? {
        defer { unsetenv("IVSERVER_HANDOVER_CHILD") }
        guard let value = getenv("IVSERVER_HANDOVER_CHILD"), let owner = getenv("IVSERVER_HANDOVER_PID"),
              Int32(String(cString: owner)) == getpid() else { return nil }
        return Int32(String(cString: value))
    }

    /// Marks every descriptor above stderr close-on-exec, so a child gets
    /// only its standard streams, whatever our parent let us inherit.
    package static func closeInheritedDescriptorsOnExec() {
        for name in ProcFS.entries(of: "/proc/self/fd") {
            guard let fd = Int32(name), fd > 2 else { continue }
            // The listing's own fd is closed by now: EBADF for it is no matter.
            Posix.setCloseOnExecIfOpen(fd)
        }
    }
}
