import Glibc

/// Executing this process's binary again in place (same pid, same
/// arguments), handing the new image named fds, and what the new image
/// reads back: both directions of the variables are here. The names
/// travel in `IVSERVER_HANDOVER_FDS` ("name=fd:name=fd"), for this pid
/// only (`IVSERVER_HANDOVER_PID`), with the child to watch in
/// `IVSERVER_HANDOVER_CHILD`.
package enum Reexec {
    static let pidVariable = "IVSERVER_HANDOVER_PID"
    static let fdsVariable = "IVSERVER_HANDOVER_FDS"
    static let childVariable = "IVSERVER_HANDOVER_CHILD"
    static let variables = [pidVariable, fdsVariable, childVariable]

    /// The environment the new image gets: ours without an earlier
    /// hand-over's variables, plus this one's.
    package static func environment(_ current: [String], pid: Int32, handing fds: [(name: String, fd: Int32)],
                                    child: Int32?) -> [String] {
        var environment = current.filter { entry in !variables.contains { entry.hasPrefix($0 + "=") } }
        environment += ["\(pidVariable)=\(pid)", "\(fdsVariable)=" + fds.map { "\($0.name)=\($0.fd)" }.joined(separator: ":")]
        if let child { environment.append("\(childVariable)=\(child)") }
        return environment
    }

    /// What an image before the re-exec handed this one, from its
    /// variables (pure): the fds by number and name, and the child to
    /// watch; nothing unless the pid is `ownPID`.
    package static func parse(ownPID: Int32, pid: String?, fds: String?, child: String?) -> (fds: [(fd: Int32, name: String)], child: Int32?) {
        guard let pid, Int32(pid) == ownPID else { return ([], nil) }
        let handed = (fds ?? "").split(separator: ":").compactMap { item -> (fd: Int32, name: String)? in
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let fd = Int32(parts[1]), fd > 2 else { return nil }
            return (fd, String(parts[0]))
        }
        return (handed, child.flatMap { Int32($0) }.flatMap { $0 > 0 ? $0 : nil })
    }

    /// What the image before a re-exec handed this process, read once:
    /// the variables are removed so that no child sees them. The fds are
    /// made close-on-exec; numbers that are not open are left out.
    package static func takeHanded() -> (fds: [String: [OwnedFD]], child: Int32?) {
        func value(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
        let handed = parse(ownPID: getpid(), pid: value(pidVariable), fds: value(fdsVariable), child: value(childVariable))
        for name in variables { unsetenv(name) }
        return (HandedDescriptors.take(handed.fds), handed.child)
    }
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
        let environment = environment(ProcessEnvironment.current, pid: getpid(), handing: fds, child: child)
        let failure = Posix.execute(path, arguments: arguments, environment: environment)
        // Still this image: the fds stay ours alone.
        for (_, fd) in fds { try? Posix.setCloseOnExec(fd) }
        return failure
    }

    private static func selfPath() -> String? { Posix.linkTarget("/proc/self/exe") }

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
