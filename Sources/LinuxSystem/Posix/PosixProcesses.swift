import CLinux
import Glibc

/// The calls on processes and on /proc that the servers make: a pidfd,
/// a signal, an exec, a link's target, and the checks on fds a previous
/// image may or may not have left open. Each is made here only.
extension Posix {
    /// pidfd_open(2): an fd that polls readable once `pid` has ended, and
    /// that keeps naming that very process (a pid can be reused).
    package static func openProcess(_ pid: Int32, _ subject: String? = nil) throws(SystemError) -> OwnedFD {
        OwnedFD(taking: try retrying(.pidfdOpen, "pidfd_open", subject ?? "(pid \(pid))") { ivs_pidfd_open(pid) })
    }

    /// kill(2). A child that has ended but is not yet reaped still takes
    /// a signal, so for our own children this fails only on a bug.
    package static func signal(_ signal: Int32, to pid: Int32) throws(SystemError) {
        try retrying(.kill, "kill", "(pid \(pid))") { kill(pid, signal) }
    }

    /// execve(2) of `path` with `arguments` and `environment`; returns only
    /// when it failed, with the error.
    package static func execute(_ path: String, arguments: [String], environment: [String]) -> SystemError {
        if let injected = InjectedFaults.take(.execve) { return SystemError(.execve, nil, path, errno: injected) }
        let argv = CStringArray(arguments)
        let envp = CStringArray(environment)
        // The arrays must outlive the call: Swift may free an object right
        // after the last use of its properties.
        withExtendedLifetime((argv, envp)) { _ = execve(path, argv.pointers, envp.pointers) }
        return SystemError(.execve, nil, path)
    }

    /// readlink(2): where the symbolic link at `path` points; nil when
    /// there is none (or it cannot be read).
    package static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// stat(2), following links; nil when nothing is there (ENOENT).
    package static func pathStatus(_ path: String) throws(SystemError) -> stat? {
        var info = stat()
        if stat(path, &info) == 0 { return info }
        if errno == ENOENT { return nil }
        throw SystemError(.stat, "stat", path)
    }

    /// Marks `fd` close-on-exec if it is open; false when it is not (a
    /// miscounted LISTEN_FDS, a listing's own fd already closed): an fd a
    /// previous image may not have left, so EBADF here is no bug.
    @discardableResult
    package static func setCloseOnExecIfOpen(_ fd: Int32) -> Bool {
        fcntl(fd, F_SETFD, FD_CLOEXEC) == 0
    }
}

/// A NULL-terminated array of C strings for exec and spawn (argv, envp):
/// the one builder of them; the strings live as long as the array, so a
/// call that takes `pointers` runs inside `withExtendedLifetime(array)`.
package final class CStringArray {
    package let pointers: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let count: Int

    package init(_ strings: [String]) {
        count = strings.count
        pointers = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() { (pointers + index).initialize(to: strdup(string)) }
        (pointers + strings.count).initialize(to: nil)
    }

    deinit {
        for index in 0..<count { free(pointers[index]) }
        pointers.deallocate()
    }
}
