import Glibc
import Synchronization

/// The one owner of a file descriptor, for the server and its clients
/// alike: it is closed exactly once, by `close()` or when the owner goes
/// away. Every fd this package creates or receives is wrapped at once, and
/// every one is close-on-exec. The number is held atomically, so a client
/// may close on one thread while a worker reads `rawValue` on another.
public final class OwnedFD: Sendable {
    private let descriptor: Atomic<Int32>

    /// Takes ownership of `descriptor`.
    public init(taking descriptor: Int32) {
        precondition(descriptor >= 0, "not a file descriptor: \(descriptor)")
        self.descriptor = Atomic(descriptor)
    }

    deinit { close() }

    public var isOpen: Bool { descriptor.load(ordering: .acquiring) >= 0 }

    /// The raw number, for system calls. Using it after close is a bug.
    public var rawValue: Int32 {
        let value = descriptor.load(ordering: .acquiring)
        precondition(value >= 0, "file descriptor used after close")
        return value
    }

    /// Runs `body` with the raw number while the descriptor is open; nil
    /// once it is closed, so no caller can hand on a stale number.
    public func withDescriptor<Result>(_ body: (Int32) throws -> Result) rethrows -> Result? {
        let value = descriptor.load(ordering: .acquiring)
        guard value >= 0 else { return nil }
        return try body(value)
    }

    /// Closes the descriptor; later calls do nothing. Errors from close(2)
    /// are not actionable (the descriptor is gone either way on Linux).
    public func close() {
        let value = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        guard value >= 0 else { return }
        _ = Glibc.close(value)
    }
}
