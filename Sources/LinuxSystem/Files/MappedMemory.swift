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

/// `count` bytes of a file (the shared memory) mapped shared, read-write,
/// from any offset: the mapping starts at the page below it (a huge page
/// on hugetlbfs, where nothing smaller maps). Unmapped when it goes.
/// Offsets below are relative to the start asked for; the owner checks
/// them (an offset outside is a programmer error here, and traps).
/// The guest and other processes change these bytes at any time: shared
/// words are accessed atomically.
public final class MappedMemory: @unchecked Sendable {
    // @unchecked: the mapping never changes after init; concurrent access to
    // the bytes is the point of shared memory, and the word accessors are
    // atomic.
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    private let base: UnsafeMutableRawPointer
    public let count: Int

    /// Maps `count` bytes of `fd` from `offset`.
    public init(_ fd: OwnedFD, offset: UInt64, count: Int) throws(SystemError) {
        let hugePage = ivs_hugetlbfs_page_size(fd.rawValue)
        let page = hugePage > 0 ? UInt64(hugePage) : UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset / page * page
        let lead = Int(offset - start)
        mappingLength = max(lead + count, 1)
        let address = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, off_t(start))
        guard let address, address != MAP_FAILED else { throw SystemError(.mmap, "\(count) bytes at offset \(offset)") }
        mapping = address
        base = address + lead
        self.count = count
    }

    /// Anonymous shared memory of `count` bytes, zeroed: the same accessors
    /// over a plain buffer, for tests of logic that runs on shared words.
    public init(anonymousBytes count: Int) {
        mappingLength = max(count, 1)
        let address = mmap(nil, mappingLength, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        precondition(address != MAP_FAILED && address != nil, "mmap of \(count) anonymous bytes failed")
        mapping = address!
        base = mapping
        self.count = count
    }

    deinit { munmap(mapping, mappingLength) }

    /// Whether `offset..<offset+length` lies inside.
    public func contains(offset: Int, length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= count && length <= count - offset
    }

    private func word(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        precondition(contains(offset: offset, length: 4) && offset % 4 == 0, "word at \(offset) outside \(count) bytes or unaligned")
        return (base + offset).assumingMemoryBound(to: UInt32.self)
    }

    // MARK: bytes

    /// The bytes `offset..<offset+length` in place, for the duration of
    /// `body`. They may change under you (the guest writes them too).
    public func withBytes<Result>(offset: Int, count length: Int, _ body: (RawSpan) throws -> Result) rethrows -> Result {
        precondition(contains(offset: offset, length: length), "bytes \(offset)..<\(offset + length) outside \(count)")
        return try body(UnsafeRawBufferPointer(start: base + offset, count: length).bytes)
    }

    /// The same, writable.
    public func withMutableBytes<Result>(offset: Int, count length: Int,
                                         _ body: (inout MutableRawSpan) throws -> Result) rethrows -> Result {
        precondition(contains(offset: offset, length: length), "bytes \(offset)..<\(offset + length) outside \(count)")
        var span = UnsafeMutableRawBufferPointer(start: base + offset, count: length).mutableBytes
        return try body(&span)
    }

    /// A copy of `length` bytes at `offset`.
    public func read(offset: Int, count length: Int) -> [UInt8] {
        precondition(contains(offset: offset, length: length), "bytes \(offset)..<\(offset + length) outside \(count)")
        return Array(UnsafeRawBufferPointer(start: base + offset, count: length))
    }

    /// Copies `bytes` to `offset`.
    public func write(_ bytes: some Collection<UInt8>, offset: Int) {
        precondition(contains(offset: offset, length: bytes.count), "bytes \(offset)..<\(offset + bytes.count) outside \(count)")
        UnsafeMutableRawBufferPointer(start: base + offset, count: bytes.count).copyBytes(from: bytes)
    }

    // MARK: 32-bit words, atomically (offsets 4-byte aligned)

    public func load(offset: Int) -> UInt32 { ivs_atomic_load_u32(word(offset)) }

    public func store(_ value: UInt32, offset: Int) { ivs_atomic_store_u32(word(offset), value) }

    /// Stores `value`; returns what the word held.
    public func exchange(_ value: UInt32, offset: Int) -> UInt32 { ivs_atomic_exchange_u32(word(offset), value) }

    /// Stores `desired` if the word holds `expected`; returns what it held
    /// (equal to `expected` exactly when the store happened).
    public func compareExchange(expected: UInt32, desired: UInt32, offset: Int) -> UInt32 {
        ivs_atomic_compare_exchange_u32(word(offset), expected, desired)
    }

    /// Adds `value` (wrapping); returns the previous value.
    public func add(_ value: UInt32, offset: Int) -> UInt32 { ivs_atomic_fetch_add_u32(word(offset), value) }

    // MARK: futex on a word

    /// Sleeps while the word at `offset` holds `expected`, until a wake on
    /// that word (from this or any process mapping the file) or the timeout.
    public func wait(offset: Int, expected: UInt32, timeout: Duration?) throws(SystemError) -> FutexWaitResult {
        let address = word(offset)
        let result: Int32
        if let timeout {
            var limit = SystemTime.timespec(timeout)
            result = ivs_futex_wait(address, expected, &limit)
        } else {
            result = ivs_futex_wait(address, expected, nil)
        }
        if result == 0 { return .woken }
        switch errno {
        case EAGAIN: return .valueChanged
        case ETIMEDOUT: return .timedOut
        case EINTR: return .woken
        case let code: throw SystemError(.futexWait, nil, "at offset \(offset)", errno: code)
        }
    }

    /// Wakes up to `count` waiters on the word at `offset`; how many woke.
    @discardableResult
    public func wake(offset: Int, count waiters: Int32 = Int32.max) throws(SystemError) -> Int {
        Int(try Posix.retrying(.futexWake, nil, "at offset \(offset)") { ivs_futex_wake(word(offset), waiters) })
    }
}
