import Glibc

/// A failed system call: the call, the path or peer it was about, and errno.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var subject: String?
    public var errno: Int32

    public init(_ operation: String, _ subject: String? = nil, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.subject = subject
        self.errno = errno
    }

    public var errnoText: String { String(cString: strerror(errno)) }

    public var description: String {
        "\(operation)\(subject.map { " \($0)" } ?? ""): \(errnoText)"
    }
}

/// Helpers every system call in this layer goes through.
package enum Posix {
    /// Runs `call` until it does not fail with EINTR. Returns its result, or
    /// throws a SystemError naming `operation` for any other failure.
    @discardableResult
    // Inlinable: generic over the call's result, it is specialized in the
    // caller's module (a hot path's sendmsg, recvmsg) instead of being
    // called through generic metadata and a closure context.
    @inlinable
    package static func retrying<T: FixedWidthInteger & SignedInteger>(
        _ operation: String, _ subject: String? = nil, _ call: () -> T
    ) throws(SystemError) -> T {
        if let injected = InjectedFaults.take(operation) { throw SystemError(operation, subject, errno: injected) }
        while true {
            let result = call()
            if result != -1 { return result }
            if errno == EINTR { continue }
            throw SystemError(operation, subject)
        }
    }

    /// Like `retrying`, but EAGAIN/EWOULDBLOCK come back as nil.
    @inlinable
    package static func retryingUnlessWouldBlock<T: FixedWidthInteger & SignedInteger>(
        _ operation: String, _ subject: String? = nil, _ call: () -> T
    ) throws(SystemError) -> T? {
        if let injected = InjectedFaults.take(operation) {
            if injected == EAGAIN || injected == EWOULDBLOCK { return nil }
            throw SystemError(operation, subject, errno: injected)
        }
        while true {
            let result = call()
            if result != -1 { return result }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return nil
            default: throw SystemError(operation, subject)
            }
        }
    }
}
