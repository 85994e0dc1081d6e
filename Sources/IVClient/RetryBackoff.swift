/// Waits that grow from 50 µs to 5 ms, for retrying what only the peer can
/// unblock (a signal table it has not drained yet) without spinning the CPU
/// and without sleeping long when the peer is quick.
struct RetryBackoff {
    static let first: Duration = .microseconds(50)
    static let longest: Duration = .milliseconds(5)
    private(set) var next = first

    /// The wait to make now; the one after is twice as long, up to `longest`.
    mutating func advance() -> Duration {
        defer { next = min(next * 2, Self.longest) }
        return next
    }

    mutating func reset() { next = Self.first }
}
