import CLinux
import Glibc

/// Every system call in this layer goes through these: EINTR is retried,
/// would-block is a value where the caller can meet it, anything else is a
/// SystemError naming the call, and a test's fault script is honoured.
/// A closed or foreign fd (EBADF) or a bad address (EFAULT) is a bug of
/// ours, not a condition: it traps.
package enum Posix {
    /// Runs `call` until it does not fail with EINTR. Returns its result, or
    /// throws a SystemError naming `name` for any other failure.
    @discardableResult
    // Inlinable: generic over the call's result, it is specialized in the
    // caller's module (a hot path's sendmsg, recvmsg) instead of being
    // called through generic metadata and a closure context.
    @inlinable
    package static func retrying<T: FixedWidthInteger & SignedInteger>(
        _ name: SystemCall, _ operation: String? = nil, _ subject: String? = nil, _ call: () -> T
    ) throws(SystemError) -> T {
        if let injected = InjectedFaults.take(name) { throw SystemError(name, operation, subject, errno: injected) }
        while true {
            let result = call()
            if result != -1 { return result }
            let code = errno
            if code == EINTR { continue }
            trapOnProgrammerError(code, name)
            throw SystemError(name, operation, subject, errno: code)
        }
    }

    /// Like `retrying`, but EAGAIN/EWOULDBLOCK come back as nil.
    @inlinable
    package static func retryingUnlessWouldBlock<T: FixedWidthInteger & SignedInteger>(
        _ name: SystemCall, _ operation: String? = nil, _ subject: String? = nil, _ call: () -> T
    ) throws(SystemError) -> T? {
        if let injected = InjectedFaults.take(name) {
            if injected == EAGAIN || injected == EWOULDBLOCK { return nil }
            throw SystemError(name, operation, subject, errno: injected)
        }
        while true {
            let result = call()
            if result != -1 { return result }
            let code = errno
            switch code {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default:
                trapOnProgrammerError(code, name)
                throw SystemError(name, operation, subject, errno: code)
            }
        }
    }

    /// EBADF and EFAULT mean we passed a closed fd or a bad pointer.
    @inlinable
    package static func trapOnProgrammerError(_ code: Int32, _ name: SystemCall) {
        precondition(code != EBADF && code != EFAULT, "\(name.rawValue) on a bad fd or address: \(String(cString: strerror(code)))")
    }

    /// Sets or clears O_NONBLOCK (one place for it).
    package static func setNonBlocking(_ fd: OwnedFD, _ nonBlocking: Bool = true) throws(SystemError) {
        let flags = try retrying(.fcntl, "fcntl(F_GETFL)") { fcntl(fd.rawValue, F_GETFL) }
        let wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        guard wanted != flags else { return }
        try retrying(.fcntl, "fcntl(F_SETFL)") { fcntl(fd.rawValue, F_SETFL, wanted) }
    }

    /// Sets FD_CLOEXEC, or clears it for a descriptor meant to cross an exec.
    package static func setCloseOnExec(_ fd: Int32, _ closeOnExec: Bool = true) throws(SystemError) {
        try retrying(.fcntl, "fcntl(F_SETFD)") { fcntl(fd, F_SETFD, closeOnExec ? FD_CLOEXEC : 0) }
    }

    /// fstat of `fd`.
    package static func status(_ fd: OwnedFD, _ subject: String? = nil) throws(SystemError) -> stat {
        var info = stat()
        try retrying(.fstat, nil, subject) { fstat(fd.rawValue, &info) }
        return info
    }

    /// lstat of `path`; nil when nothing is there.
    package static func linkStatus(_ path: String) throws(SystemError) -> stat? {
        var info = stat()
        if lstat(path, &info) == 0 { return info }
        if errno == ENOENT { return nil }
        throw SystemError(.lstat, "stat", path)
    }

    /// poll(2) on `entries` for at most `timeout` (nil: no limit), with
    /// nanosecond resolution; how many are ready (0 on timeout).
    package static func poll(_ entries: inout [pollfd], timeout: Duration?) throws(SystemError) -> Int {
        let nanoseconds = timeout.map(SystemTime.nanoseconds) ?? -1
        let count = UInt(entries.count)
        return Int(try retrying(.poll) { ivs_poll_nanoseconds(&entries, count, nanoseconds) })
    }

    /// Whether `fd` is readable within `timeout` (zero: now, nil: no limit).
    package static func isReadable(_ fd: OwnedFD, within timeout: Duration?) throws(SystemError) -> Bool {
        var entry = [pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)]
        return try poll(&entry, timeout: timeout) > 0
    }

    /// Up to `count` bytes of a file from `offset` (fewer at its end), with
    /// pread, into uninitialized memory (a large read of a sparse file
    /// writes no zeros first).
    package static func read(_ fd: OwnedFD, at offset: Int, count: Int, _ subject: String? = nil) throws(SystemError) -> [UInt8] {
        var failure: SystemError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            while initialized < count {
                let done = initialized
                let outcome = Result { () throws(SystemError) -> Int in
                    try retrying(.pread, nil, subject) { pread(fd.rawValue, buffer.baseAddress! + done, count - done, off_t(offset + done)) }
                }
                switch outcome {
                case let .failure(error):
                    failure = error
                    return
                case .success(0):
                    return
                case let .success(result):
                    initialized += result
                }
            }
        }
        if let failure { throw failure }
        return bytes
    }
}
