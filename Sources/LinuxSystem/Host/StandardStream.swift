import Glibc

/// Unbuffered writes to standard output or error: each call reaches a pipe
/// or file at once (a long-running tool such as `ivctl watch` needs that,
/// and a log's lines must not interleave). The `stderr` FILE is a global
/// Swift 6 rejects.
public enum StandardStream: Int32, Sendable {
    case output = 1
    case error = 2

    /// Writes all of `bytes`: one write(2) unless it is cut short (then the
    /// rest follows). A closed stream (EPIPE and the like) ends the write
    /// silently: a log that cannot be written must not stop the server.
    public func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = (try? Posix.retrying(.write, "write to a standard stream") {
                bytes[offset...].withUnsafeBytes { Glibc.write(rawValue, $0.baseAddress, $0.count) }
            }) ?? -1
            guard written > 0 else { return }
            offset += written
        }
    }

    public func write(_ text: String) {
        write(Array(text.utf8))
    }

    /// All of standard input, to its end; more than `maximum` bytes is an
    /// EFBIG (16 MiB unless told).
    public static func readInput(maximum: Int? = nil) throws(SystemError) -> [UInt8] {
        try FileContents.read(fd: 0, name: "standard input", maximum: maximum ?? FileContents.maximumSize)
    }
}
