import Glibc

/// Unbuffered writes to standard output or error: each call reaches a pipe
/// or file at once, which a long-running tool such as `ivctl watch` needs.
public enum StandardStream: Int32, Sendable {
    case output = 1
    case error = 2

    /// Writes all of `text`, retrying after signals; a closed stream
    /// (EPIPE and the like) ends the write silently.
    public func write(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let result = Glibc.write(rawValue, bytes.baseAddress! + done, bytes.count - done)
                if result < 0 && errno == EINTR { continue }
                guard result > 0 else { return }
                done += result
            }
        }
    }
}
