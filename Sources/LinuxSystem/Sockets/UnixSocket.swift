import CLinux
import Glibc

/// Who is at the other end of a UNIX socket (SO_PEERCRED: the credentials
/// in effect when the peer called connect).
public struct PeerCredentials: Equatable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    public var description: String { "pid \(pid) uid \(uid) gid \(gid)" }
}

/// What a non-blocking receive produced.
public enum ReceiveResult {
    /// `count` bytes, plus any fds that came with them (already owned).
    case data(count: Int, fds: [OwnedFD], controlTruncated: Bool)
    case endOfStream
    case wouldBlock
}

/// UNIX stream sockets: listening, accepting, connecting, and messages that
/// carry fds (SCM_RIGHTS). All sockets are close-on-exec; all sends use
/// MSG_NOSIGNAL so a vanished peer is an EPIPE, never a SIGPIPE.
public enum UnixSocket {
    /// The longest path a socket address holds (sun_path without its NUL).
    public static var maximumPathLength: Int { ivs_sun_path_capacity() - 1 }

    /// A non-blocking socket bound to `path` and listening. The socket file
    /// gets exactly `mode` and, when given, `group`, and is never more open
    /// than that: bind runs under a umask that yields `mode` (without group
    /// bits until the group is set).
    public static func listen(path: String, mode: mode_t = 0o600, group: gid_t? = nil, backlog: Int32 = SOMAXCONN) throws(SystemError) -> OwnedFD {
        let address = try SocketAddress(path: path)
        let socket = OwnedFD(taking: try Posix.retrying(.socket, nil, path) { ivs_unix_stream_socket() })
        let bindMode = group == nil ? mode : mode & ~0o070
        let previousMask = umask(~bindMode & 0o777)
        let bound = Result { () throws(SystemError) in
            try Posix.retrying(.bind, nil, path) { address.withSocketAddress { bind(socket.rawValue, $0, $1) } }
        }
        umask(previousMask)
        _ = try bound.get()
        do {
            if let group { try setFileAccess(path: path, mode: mode, group: group) }
            try Posix.retrying(.listen, nil, path) { Glibc.listen(socket.rawValue, backlog) }
        } catch {
            // Ours, just made: nothing else can be at the path.
            _ = try? Posix.retrying(.unlink, nil, path) { unlink(path) }
            throw error
        }
        return socket
    }

    /// Gives the socket file at `path` exactly `mode` and, when given,
    /// `group`. The file already has the group when it is the server's own
    /// (the packaged units run with Group=ivshmem): then there is no chown,
    /// which a sandbox may rightly forbid (@chown is @privileged).
    public static func setFileAccess(path: String, mode: mode_t, group: gid_t?) throws(SystemError) {
        var info = stat()
        try Posix.retrying(.stat, "stat socket", path) { stat(path, &info) }
        if let group, info.st_gid != group {
            try Posix.retrying(.chown, "chown socket to group \(group)", path) { chown(path, uid_t.max, group) }
        }
        if info.st_mode & 0o7777 != mode {
            try Posix.retrying(.chmod, "chmod socket", path) { chmod(path, mode) }
        }
    }

    /// A connected socket; blocking unless `nonBlocking`. With `timeout`,
    /// every blocking step (the connect too, when the listener's backlog is
    /// full) fails with EAGAIN after that long.
    public static func connect(path: String, nonBlocking: Bool = false, timeout: Duration? = nil) throws(SystemError) -> OwnedFD {
        let address = try SocketAddress(path: path)
        let socket = OwnedFD(taking: try Posix.retrying(.socket, nil, path) { ivs_unix_stream_socket() })
        if !nonBlocking { try Posix.setNonBlocking(socket, false) }
        if let timeout { try setTimeouts(socket, timeout: timeout) }
        // A non-blocking connect to a UNIX socket whose backlog is full says
        // EAGAIN; a blocking one waits. Either way the caller learns of it.
        try Posix.retrying(.connect, nil, path) { address.withSocketAddress { Glibc.connect(socket.rawValue, $0, $1) } }
        return socket
    }

    /// A non-blocking datagram socket connected to `path`, which may name
    /// the abstract namespace with a leading "@" (as NOTIFY_SOCKET does).
    public static func connectDatagram(path: String) throws(SystemError) -> OwnedFD {
        let address = try SocketAddress(path: path, abstractWithAt: true)
        let socket = OwnedFD(taking: try Posix.retrying(.socket, nil, path) { ivs_unix_datagram_socket() })
        try Posix.retrying(.connect, nil, path) { address.withSocketAddress { Glibc.connect(socket.rawValue, $0, $1) } }
        return socket
    }

    /// Waits up to `timeout` for room to send on `socket`; whether there is.
    public static func waitUntilWritable(_ socket: OwnedFD, timeout: Duration) throws(SystemError) -> Bool {
        var entry = [pollfd(fd: socket.rawValue, events: Int16(POLLOUT), revents: 0)]
        return try Posix.poll(&entry, timeout: timeout) > 0
    }

    public enum AcceptResult {
        case accepted(OwnedFD)
        case wouldBlock
        /// A connection died while queued, or a signal interrupted: try again.
        case retry
    }

    /// Accepts one pending connection as a non-blocking, close-on-exec fd.
    public static func accept(_ listener: OwnedFD) throws(SystemError) -> AcceptResult {
        let injected = InjectedFaults.take(.accept)
        let fd = injected == nil ? ivs_accept_nonblocking(listener.rawValue) : -1
        if fd >= 0 { return .accepted(OwnedFD(taking: fd)) }
        let code = injected ?? errno
        switch code {
        case EAGAIN, EWOULDBLOCK: return .wouldBlock
        case EINTR, ECONNABORTED, EPROTO: return .retry
        default: throw SystemError(.accept, errno: code)
        }
    }

    /// The peer's supplementary groups (SO_PEERGROUPS), empty if unknown.
    public static func peerGroups(_ socket: OwnedFD) -> [UInt32] {
        var capacity = 64
        while capacity <= 65536 {
            var groups = [UInt32](repeating: 0, count: capacity)
            let count = ivs_get_peer_groups(socket.rawValue, &groups, Int32(capacity))
            if count >= 0 { return Array(groups.prefix(Int(count))) }
            guard errno == ERANGE else { return [] }
            capacity *= 4
        }
        return []
    }

    public static func peerCredentials(_ socket: OwnedFD) throws(SystemError) -> PeerCredentials {
        var credentials = ivs_peer_credentials()
        try Posix.retrying(.getsockopt, "getsockopt(SO_PEERCRED)") { ivs_get_peer_credentials(socket.rawValue, &credentials) }
        return PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }

    /// True when the peer has closed or reset the connection. Never blocks.
    public static func peerHasHungUp(_ socket: OwnedFD) -> Bool {
        ivs_peer_has_hung_up(socket.rawValue) != 0
    }

    /// Sends `bytes` with `fds` attached (SCM_RIGHTS). Returns how many bytes
    /// went out, or nil when the socket is full. Partial sends are possible;
    /// the fds travel with the first byte sent.
    public static func send(_ socket: OwnedFD, _ bytes: ArraySlice<UInt8>, fds: [Int32] = []) throws(SystemError) -> Int? {
        precondition(!bytes.isEmpty, "fds need at least one byte of data to travel with")
        let fd = socket.rawValue
        return try Posix.retryingUnlessWouldBlock(.sendmsg) { () -> Int in
            bytes.withUnsafeBytes { payload in rawSend(fd, payload, fds) }
        }
    }

    /// Receives into `buffer`, accepting up to `maximumFDs` fds (received fds
    /// are close-on-exec and owned at once; any beyond the limit never reach
    /// us: the kernel discards them and sets `controlTruncated`).
    public static func receive(
        _ socket: OwnedFD, into buffer: UnsafeMutableRawBufferPointer, maximumFDs: Int = 0
    ) throws(SystemError) -> ReceiveResult {
        var sender: PeerCredentials?
        return try receive(socket, into: buffer, maximumFDs: maximumFDs, sender: &sender, wantsSender: false)
    }

    /// The same, and who sent it, when the socket passes credentials
    /// (`passCredentials`): what the kernel vouches for, not what the
    /// sender claims (a service manager hears only its main process so).
    public static func receive(
        _ socket: OwnedFD, into buffer: UnsafeMutableRawBufferPointer, maximumFDs: Int = 0, sender: inout PeerCredentials?
    ) throws(SystemError) -> ReceiveResult {
        try receive(socket, into: buffer, maximumFDs: maximumFDs, sender: &sender, wantsSender: true)
    }

    /// Attaches each sender's credentials to what `socket` receives from now on.
    public static func passCredentials(_ socket: OwnedFD) throws(SystemError) {
        try Posix.retrying(.setsockopt, "setsockopt(SO_PASSCRED)") { ivs_pass_credentials(socket.rawValue) }
    }

    private static func receive(
        _ socket: OwnedFD, into buffer: UnsafeMutableRawBufferPointer, maximumFDs: Int, sender: inout PeerCredentials?,
        wantsSender: Bool
    ) throws(SystemError) -> ReceiveResult {
        let fd = socket.rawValue
        var fds: [Int32] = []
        var truncated = false
        var credentials: ivs_peer_credentials?
        let count = try Posix.retryingUnlessWouldBlock(.recvmsg) { () -> Int in
            rawReceive(fd, buffer, maximumFDs, wantsSender, &fds, &truncated, &credentials)
        }
        sender = credentials.map { PeerCredentials(pid: $0.pid, uid: $0.uid, gid: $0.gid) }
        let owned = fds.map { OwnedFD(taking: $0) }
        guard let count else { return .wouldBlock }
        if count == 0 && owned.isEmpty { return .endOfStream }
        return .data(count: count, fds: owned, controlTruncated: truncated)
    }

    /// What `receive(_:upTo:maximumFDs:)` got, and why it stopped.
    public struct Received {
        public enum End: Equatable, Sendable {
            /// All the bytes asked for came.
            case complete
            case endOfStream
            /// The peer reset the connection (ECONNRESET).
            case reset
            /// SO_RCVTIMEO passed first.
            case timedOut
        }

        public var bytes: [UInt8] = []
        /// Every fd that came, owned already.
        public var fds: [OwnedFD] = []
        /// Some fds did not fit `maximumFDs` (the kernel closed them).
        public var truncated = false
        public var end = End.complete
    }

    /// The path `fd` listens on, when it is a listening UNIX stream socket
    /// bound to a path (what a systemd socket unit hands over); nil for
    /// any other fd.
    public static func listeningPath(_ fd: OwnedFD) -> String? {
        func option(_ name: Int32) -> Int32? {
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd.rawValue, SOL_SOCKET, name, &value, &length) == 0 ? value : nil
        }
        guard option(SO_DOMAIN) == AF_UNIX, option(SO_TYPE) == Int32(SOCK_STREAM.rawValue), option(SO_ACCEPTCONN) == 1 else { return nil }
        var address = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &length) }
        }
        guard named == 0 else { return nil }
        let bytes = withUnsafeBytes(of: address.sun_path) { Array($0) }
        let used = min(bytes.count, max(0, Int(length) - MemoryLayout<sa_family_t>.size))
        let path = bytes[..<used].prefix { $0 != 0 }
        // An abstract address (a leading NUL) has no path.
        guard !path.isEmpty else { return nil }
        return String(decoding: path, as: UTF8.self)
    }

    /// Whether a byte is waiting to be read on `socket` now (without reading
    /// it or waiting for one).
    public static func hasWaitingBytes(_ socket: OwnedFD) throws(SystemError) -> Bool {
        var byte: UInt8 = 0
        let peeked = try Posix.retryingUnlessWouldBlock(.recvmsg, "peek", nil) { recv(socket.rawValue, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) }
        return (peeked ?? 0) > 0
    }

    /// Reads from a blocking socket until `count` bytes, the end of the
    /// stream, a reset or its receive timeout, keeping every fd that comes
    /// (room for `maximumFDs` a read).
    public static func receive(_ socket: OwnedFD, upTo count: Int, maximumFDs: Int) throws(SystemError) -> Received {
        var received = Received()
        var buffer = [UInt8](repeating: 0, count: max(count, 1))
        while received.bytes.count < count {
            let wanted = count - received.bytes.count
            let outcome = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in
                    try receive(socket, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<wanted]), maximumFDs: maximumFDs)
                }
            }
            let result: ReceiveResult
            switch outcome {
            case let .success(value):
                result = value
            case let .failure(error) where error.errno == ECONNRESET:
                received.end = .reset
                return received
            case let .failure(error):
                throw error
            }
            switch result {
            case .endOfStream:
                received.end = .endOfStream
                return received
            case .wouldBlock:
                received.end = .timedOut
                return received
            case let .data(bytes, fds, truncated):
                received.fds += fds
                received.truncated = received.truncated || truncated
                received.bytes += buffer[..<bytes]
            }
        }
        return received
    }

    /// Sends all of `bytes` on a blocking socket; false when its send
    /// timeout passed first.
    public static func sendAll(_ socket: OwnedFD, _ bytes: [UInt8]) throws(SystemError) -> Bool {
        var sent = 0
        while sent < bytes.count {
            guard let count = try send(socket, bytes[sent...]) else { return false }
            sent += count
        }
        return true
    }

    /// Sets SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket (tests and tools).
    public static func setTimeouts(_ socket: OwnedFD, seconds: Int) throws(SystemError) {
        try setTimeouts(socket, timeout: .seconds(seconds))
    }

    /// The same with any duration (at least a microsecond: zero would mean none).
    public static func setTimeouts(_ socket: OwnedFD, timeout: Duration) throws(SystemError) {
        var limit = SystemTime.timeval(atLeastAMicrosecond: timeout)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
            try Posix.retrying(.setsockopt) {
                setsockopt(socket.rawValue, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
            }
        }
    }
}

/// A UNIX socket's address, built once from a path: the only place that
/// fills a sockaddr_un.
struct SocketAddress {
    private var storage = sockaddr_un()
    private let length: socklen_t

    /// `abstractWithAt`: a leading "@" names the abstract namespace.
    init(path: String, abstractWithAt: Bool = false) throws(SystemError) {
        var bytes = Array(path.utf8)
        if abstractWithAt, bytes.first == UInt8(ascii: "@") {
            bytes[0] = 0
        } else if let problem = SocketPath.problem(path) {
            throw SystemError(.connect, "socket path", "\(path) (\(problem))", errno: problem.errno)
        }
        guard bytes.count < ivs_sun_path_capacity() else {
            throw SystemError(.connect, "socket path", path, errno: ENAMETOOLONG)
        }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: bytes) }
        // A path's address runs to its NUL; an abstract one is exactly its bytes.
        length = bytes.first == 0 ? socklen_t(MemoryLayout<sa_family_t>.size + bytes.count) : socklen_t(MemoryLayout<sockaddr_un>.size)
    }

    func withSocketAddress<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafePointer(to: storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }
}

/// What makes a path unusable as a UNIX socket's address, before any call.
public enum SocketPath {
    public enum Problem: Equatable, Sendable, CustomStringConvertible {
        case empty
        case containsNUL
        case tooLong(bytes: Int, limit: Int)

        /// What the kernel would say.
        public var errno: Int32 {
            if case .tooLong = self { return ENAMETOOLONG }
            return EINVAL
        }

        public var description: String {
            switch self {
            case .empty: return "empty path"
            case .containsNUL: return "path contains a NUL byte"
            case let .tooLong(bytes, limit): return "path is \(bytes) bytes, longer than the \(limit) a UNIX socket address holds"
            }
        }
    }

    public static func problem(_ path: String) -> Problem? {
        let bytes = Array(path.utf8)
        if bytes.isEmpty { return .empty }
        if bytes.contains(0) { return .containsNUL }
        if bytes.count > UnixSocket.maximumPathLength { return .tooLong(bytes: bytes.count, limit: UnixSocket.maximumPathLength) }
        return nil
    }
}

// MARK: the raw calls; -1 with errno set on failure, like the syscalls.

private func rawSend(_ fd: Int32, _ payload: UnsafeRawBufferPointer, _ fds: [Int32]) -> Int {
    let controlLength = ControlMessages.space(forDescriptors: fds.count)
    return withUnsafeTemporaryAllocation(byteCount: max(controlLength, 1), alignment: MemoryLayout<cmsghdr>.alignment) { control in
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            if !fds.isEmpty {
                control.initializeMemory(as: UInt8.self, repeating: 0)
                message.msg_control = control.baseAddress
                message.msg_controllen = controlLength
                ControlMessages.writeRights(fds, into: &message)
            }
            return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
        }
    }
}

private func rawReceive(
    _ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ maximumFDs: Int, _ wantsSender: Bool,
    _ fds: inout [Int32], _ truncated: inout Bool, _ sender: inout ivs_peer_credentials?
) -> Int {
    let controlLength = ControlMessages.space(forDescriptors: maximumFDs) + (wantsSender ? ControlMessages.credentialsSpace : 0)
    return withUnsafeTemporaryAllocation(byteCount: max(controlLength, 1), alignment: MemoryLayout<cmsghdr>.alignment) { control in
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            if controlLength > 0 {
                control.initializeMemory(as: UInt8.self, repeating: 0)
                message.msg_control = control.baseAddress
                message.msg_controllen = controlLength
            }
            let count = recvmsg(fd, &message, Int32(MSG_CMSG_CLOEXEC))
            guard count >= 0 else { return count }
            truncated = message.msg_flags & Int32(MSG_CTRUNC) != 0
            if controlLength > 0 { ControlMessages.read(&message, fds: &fds, sender: &sender) }
            return count
        }
    }
}
