import CLinux
import Glibc

/// The system calls this layer makes, by name: what a failure says was
/// called, and what a test's fault script names (never a message's text,
/// so rewording a message cannot disarm a test).
public enum SystemCall: String, Sendable, Hashable {
    case accept, bind, chmod, chown, connect, eventfd, execve, fallocate, fcntl, flock, fork, fstat, ftruncate
    case getsockopt, kill, listen, lstat, mmap, open, pipe, poll, pread, pwrite, read, readlink, recvmsg
    case sendmsg, sendmmsg, setsockopt, socket, stat, unlink, waitpid, write
    case epollControl = "epoll_ctl"
    case epollCreate = "epoll_create1"
    case epollWait = "epoll_wait"
    case futexWait = "futex wait"
    case futexWake = "futex wake"
    case pidfdOpen = "pidfd_open"
    case threadCreate = "pthread_create"
}

/// A failed system call: which call, what it was for, the path or peer it
/// was about, and errno. Errors are told apart by `call` and `errno`, never
/// by their text.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: SystemCall
    /// What was being done, as the message says it ("size shared memory
    /// (ftruncate)"); the call's name when nothing more was said.
    public var operation: String
    public var subject: String?
    public var errno: Int32

    public init(_ call: SystemCall, _ operation: String? = nil, _ subject: String? = nil, errno: Int32 = Glibc.errno) {
        self.call = call
        self.operation = operation ?? call.rawValue
        self.subject = subject
        self.errno = errno
    }

    public var errnoText: String { String(cString: strerror(errno)) }

    public var description: String {
        "\(operation)\(subject.map { " \($0)" } ?? ""): \(errnoText)"
    }
}
