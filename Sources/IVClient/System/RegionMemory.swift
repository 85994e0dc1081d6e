import CLinux
import Glibc

/// What a futex wait ended with.
public enum FutexWaitResult: Equatable, Sendable {
    /// Woken (or interrupted by a signal): re-read the word.
    case woken
    /// The word did not hold the expected value, so there was no wait.
    case valueChanged
    case timedOut
}

/// One region of the shared memory, mapped once: `[region_begin_offset,
/// region_end_offset)`. Offsets are relative to the region's begin, as in
/// the signal tables. Every access is bounds-checked; nothing is copied
/// unless asked for. The guest and other host processes change these bytes
/// at any time, so use the atomic accessors for words that are shared.
public final class RegionMemory: @unchecked Sendable {
    // @unchecked: the mapping never changes after init; concurrent access to
    // the bytes is the point of shared memory, and the word accessors are
    // atomic.
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    private let base: UnsafeMutableRawPointer
    /// The region's size in bytes.
    public let count: Int
    let errorContext: (socketPath: String, region: String?)

    /// Maps `count` bytes of `fd` from `offset` (any offset: the mapping
    /// starts at the page below it).
    init(fd: Int32, offset: UInt64, count: Int, socketPath: String, region: String?) throws(IVClientError) {
        errorContext = (socketPath, region)
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let lead = Int(offset - start)
        mappingLength = max(lead + count, 1)
        let address = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off_t(start))
        guard let address, address != MAP_FAILED else {
            throw IVClientError(.system(operation: region == nil ? "mmap of the shared memory" : "mmap of the region", errno: errno),
                                socketPath: socketPath, region: region)
        }
        mapping = address
        base = address + lead
        self.count = count
    }

    /// Anonymous shared memory of `count` bytes, zeroed: the same accessors
    /// over a plain buffer, for tests of the signal-table logic.
    init(anonymousBytes count: Int) {
        errorContext = ("(anonymous memory)", "test")
        mappingLength = max(count, 1)
        let address = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        precondition(address != MAP_FAILED && address != nil, "mmap of \(count) anonymous bytes failed")
        mapping = address!
        base = mapping
        self.count = count
    }

    deinit { munmap(mapping, mappingLength) }

    private func invalid(_ what: String) -> IVClientError {
        IVClientError(.invalidArgument(what), socketPath: errorContext.socketPath, region: errorContext.region)
    }

    private func checkRange(_ offset: Int, _ length: Int) throws(IVClientError) {
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
            throw invalid("bytes \(offset)..<\(offset + length) are outside the \(errorContext.region == nil ? "shared memory" : "region")'s \(count) bytes")
        }
    }

    private func word(_ offset: Int) throws(IVClientError) -> UnsafeMutablePointer<UInt32> {
        try checkRange(offset, 4)
        guard offset % 4 == 0 else { throw invalid("offset \(offset) of a 32-bit word is not 4-byte aligned") }
        return (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    // MARK: bytes

    /// The bytes `offset..<offset+length` in place, for the duration of
    /// `body`. They may change under you (the guest writes them too).
    public func withUnsafeBytes<Result>(offset: Int, count length: Int,
                                        _ body: (UnsafeRawBufferPointer) -> Result) throws(IVClientError) -> Result {
        try checkRange(offset, length)
        return body(UnsafeRawBufferPointer(start: base + offset, count: length))
    }

    public func withUnsafeMutableBytes<Result>(offset: Int, count length: Int,
                                               _ body: (UnsafeMutableRawBufferPointer) -> Result) throws(IVClientError) -> Result {
        try checkRange(offset, length)
        return body(UnsafeMutableRawBufferPointer(start: base + offset, count: length))
    }

    /// A copy of `length` bytes at `offset`.
    public func read(offset: Int, count length: Int) throws(IVClientError) -> [UInt8] {
        try withUnsafeBytes(offset: offset, count: length) { Array($0) }
    }

    public func write(_ bytes: some Collection<UInt8>, offset: Int) throws(IVClientError) {
        try withUnsafeMutableBytes(offset: offset, count: bytes.count) { $0.copyBytes(from: bytes) }
    }

    // MARK: 32-bit words, atomically (offsets 4-byte aligned)

    public func load(offset: Int) throws(IVClientError) -> UInt32 {
        ivs_atomic_load_u32(try word(offset))
    }

    public func store(_ value: UInt32, offset: Int) throws(IVClientError) {
        ivs_atomic_store_u32(try word(offset), value)
    }

    /// Stores `value`; returns what the word held.
    public func exchange(_ value: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        ivs_atomic_exchange_u32(try word(offset), value)
    }

    /// Stores `desired` if the word holds `expected`; returns what it held
    /// (equal to `expected` exactly when the store happened).
    public func compareExchange(expected: UInt32, desired: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        ivs_atomic_compare_exchange_u32(try word(offset), expected, desired)
    }

    /// Adds `value` (wrapping); returns the previous value.
    public func add(_ value: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        ivs_atomic_fetch_add_u32(try word(offset), value)
    }

    // MARK: futex on a word

    /// Sleeps while the word at `offset` holds `expected`, until a wake on
    /// that word (from this or any process mapping the file) or the timeout.
    public func wait(offset: Int, expected: UInt32, timeout: Duration?) throws(IVClientError) -> FutexWaitResult {
        let address = try word(offset)
        var limit = timespec()
        if let timeout {
            let (seconds, attoseconds) = max(timeout, .zero).components
            limit = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        }
        let result = timeout == nil ? ivs_futex_wait(address, expected, nil) : ivs_futex_wait(address, expected, &limit)
        if result == 0 { return .woken }
        switch errno {
        case EAGAIN: return .valueChanged
        case ETIMEDOUT: return .timedOut
        case EINTR: return .woken
        case let code:
            throw IVClientError(.system(operation: "futex wait at offset \(offset)", errno: code),
                                socketPath: errorContext.socketPath, region: errorContext.region)
        }
    }

    /// Wakes up to `count` waiters on the word at `offset`; how many woke.
    @discardableResult
    public func wake(offset: Int, count waiters: Int32 = Int32.max) throws(IVClientError) -> Int {
        let result = ivs_futex_wake(try word(offset), waiters)
        guard result >= 0 else {
            throw IVClientError(.system(operation: "futex wake at offset \(offset)", errno: errno),
                                socketPath: errorContext.socketPath, region: errorContext.region)
        }
        return Int(result)
    }
}

extension RegionMemory: SharedWords {
    // The signal tables' offsets were checked against the region when the
    // layout was read, so these cannot fail.
    func exchangeWord(_ value: UInt32, at offset: UInt32) -> UInt32 {
        try! exchange(value, offset: Int(offset))
    }

    func compareExchangeWord(expected: UInt32, desired: UInt32, at offset: UInt32) -> UInt32 {
        try! compareExchange(expected: expected, desired: desired, offset: Int(offset))
    }
}
