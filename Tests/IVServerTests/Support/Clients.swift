import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
@testable import IVServer

/// What a HALD client got from the server.
struct HALDReply {
    var version: UInt32
    /// Bytes after the version (8 on success, none on refusal).
    var payload: [UInt8]
    var fds: [OwnedFD]
    var controlTruncated: Bool
}

/// Reads until `count` bytes arrived or the peer closed, collecting fds.
func receiveExactly(_ socket: OwnedFD, count: Int, maximumFDs: Int = 4) throws -> (bytes: [UInt8], fds: [OwnedFD], truncated: Bool) {
    let received = try UnixSocket.receive(socket, upTo: count, maximumFDs: maximumFDs)
    if received.end == .timedOut { throw TestFailure("receive timed out after \(received.bytes.count) of \(count) bytes") }
    if received.end == .reset { throw SystemError(.recvmsg, errno: ECONNRESET) }
    return (received.bytes, received.fds, received.truncated)
}

/// A blocking client socket with 5 s timeouts, so a broken server fails the
/// test instead of hanging it.
func connectClient(_ path: String) throws -> OwnedFD {
    let socket = try UnixSocket.connect(path: path)
    try UnixSocket.setTimeouts(socket, seconds: 5)
    return socket
}

func sendAll(_ socket: OwnedFD, _ bytes: [UInt8]) throws {
    guard try UnixSocket.sendAll(socket, bytes) else { throw TestFailure("send timed out") }
}

/// The whole HALD handshake with raw request bytes.
func haldHandshake(_ path: String, request: [UInt8]) throws -> HALDReply {
    let socket = try connectClient(path)
    let greeting = try receiveExactly(socket, count: 4, maximumFDs: 0)
    guard greeting.bytes.count == 4 else { throw TestFailure("no protocol version from the server") }
    if !request.isEmpty { try sendAll(socket, request) }
    // Ask for more than expected, so extra bytes or fds would show.
    let reply = try receiveExactly(socket, count: 16, maximumFDs: 8)
    let version = greeting.bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    return HALDReply(version: UInt32(littleEndian: version), payload: reply.bytes, fds: reply.fds, controlTruncated: reply.truncated)
}

func haldHandshake(_ path: String, region: String) throws -> HALDReply {
    try haldHandshake(path, request: request(region))
}

/// One message of QEMU's protocol as a raw client sees it.
struct QemuMessageReceived {
    var value: Int64
    var fd: OwnedFD?
}

/// Reads `count` messages (8 bytes, 0 or 1 fd) from a QEMU-side socket.
func readQemuMessages(_ socket: OwnedFD, count: Int) throws -> [QemuMessageReceived] {
    var messages: [QemuMessageReceived] = []
    for index in 0..<count {
        let received = try receiveExactly(socket, count: 8, maximumFDs: 2)
        guard received.bytes.count == 8 else { throw TestFailure("connection closed at message \(index)") }
        guard received.fds.count <= 1 else { throw TestFailure("message \(index) carried \(received.fds.count) fds") }
        let value = received.bytes.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
        messages.append(QemuMessageReceived(value: value, fd: received.fds.first))
    }
    return messages
}

/// What /proc says an fd is ("anon_inode:[eventfd]", a path, …).
func fdTarget(_ fd: OwnedFD) -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    let length = readlink("/proc/self/fd/\(fd.rawValue)", &buffer, buffer.count - 1)
    guard length > 0 else { return "" }
    return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func sameFile(_ fd: OwnedFD, _ path: String) -> Bool {
    var a = stat()
    var b = stat()
    return fstat(fd.rawValue, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// True when writing `a` makes `b` readable with count 1: the same eventfd.
func sameEventFD(_ a: OwnedFD, _ b: OwnedFD) throws -> Bool {
    _ = try EventFD.drain(b)
    try EventFD.signal(a)
    return try EventFD.drain(b) == 1
}
