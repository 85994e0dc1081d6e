import Glibc
import LinuxSystem

/// One region of the shared memory, mapped once: `[region_begin_offset,
/// region_end_offset)`. Offsets are relative to the region's begin, as in
/// the signal tables. Every access is bounds-checked; nothing is copied
/// unless asked for. The guest and other host processes change these bytes
/// at any time, so use the atomic accessors for words that are shared.
public final class RegionMemory: Sendable {
    private let mapping: MappedMemory
    /// The shared-memory file and where this mapping starts in it (nil for
    /// anonymous memory).
    private let file: (fd: OwnedFD, offset: UInt64)?
    /// The region's size in bytes.
    public var count: Int { mapping.count }
    let errorContext: ErrorContext

    struct ErrorContext: Sendable {
        let socketPath: String
        let region: String?
    }

    /// Maps `count` bytes of `fd` from `offset`.
    init(fd: OwnedFD, offset: UInt64, count: Int, socketPath: String, region: String?) throws(IVClientError) {
        errorContext = ErrorContext(socketPath: socketPath, region: region)
        file = (fd, offset)
        do {
            mapping = try MappedMemory(fd, offset: offset, count: count)
        } catch {
            throw IVClientError(.system(SystemError(error.call, region == nil ? "mmap of the shared memory" : "mmap of the region", errno: error.errno)),
                                socketPath: socketPath, region: region)
        }
    }

    /// Anonymous shared memory of `count` bytes, zeroed: the same accessors
    /// over a plain buffer, for tests of the signal-table logic.
    init(anonymousBytes count: Int) {
        errorContext = ErrorContext(socketPath: "(anonymous memory)", region: "test")
        mapping = MappedMemory(anonymousBytes: count)
        file = nil
    }

    private func invalid(_ what: String) -> IVClientError {
        IVClientError(.invalidArgument(what), socketPath: errorContext.socketPath, region: errorContext.region)
    }

    private func checkRange(_ offset: Int, _ length: Int) throws(IVClientError) {
        guard mapping.contains(offset: offset, length: length) else {
            throw invalid("bytes \(offset)..<\(offset + length) are outside the \(errorContext.region == nil ? "shared memory" : "region")'s \(count) bytes")
        }
    }

    private func checkWord(_ offset: Int) throws(IVClientError) {
        try checkRange(offset, 4)
        guard offset % 4 == 0 else { throw invalid("offset \(offset) of a 32-bit word is not 4-byte aligned") }
    }

    private func systemError(_ error: SystemError) -> IVClientError {
        IVClientError(.system(error), socketPath: errorContext.socketPath, region: errorContext.region)
    }

    // MARK: pages taken ahead of time

    /// Takes the pages under `offset..<offset+length` from the shared
    /// memory's filesystem now, so that touching them (reads included: a
    /// read of a page never touched takes one too) cannot fault. The memory
    /// is a sparse file; when its filesystem (a tmpfs such as /dev/shm) is
    /// full, touching a page it cannot give kills this process with SIGBUS,
    /// where this throws `.sharedMemoryFull` (carrying ENOSPC) instead.
    /// Pages that hold data keep it; anyone may be writing them meanwhile.
    public func reserve(offset: Int, count length: Int) throws(IVClientError) {
        try checkRange(offset, length)
        guard let file, length > 0 else { return }
        let start = file.offset + UInt64(offset)
        do {
            try MemoryPages.reserve(file.fd, MemoryPages.wholePages(start..<(start + UInt64(length))), "fallocate of the shared memory", nil)
        } catch where error.errno == ENOSPC || error.errno == ENOMEM {
            throw IVClientError(.sharedMemoryFull(offset: offset, count: length, errno: error.errno),
                                socketPath: errorContext.socketPath, region: errorContext.region)
        } catch where error.errno == EOPNOTSUPP {
            // Not a tmpfs: the filesystem gives its blocks another way.
        } catch {
            throw systemError(error)
        }
    }

    /// A copy of `length` bytes at `offset`, read with pread from the file
    /// rather than through the mapping: a hole of the sparse file reads as
    /// zeros and takes no page (for dumping large, mostly untouched memory).
    public func readFromFile(offset: Int, count length: Int) throws(IVClientError) -> [UInt8] {
        try checkRange(offset, length)
        guard let file else { return mapping.read(offset: offset, count: length) }
        let bytes: [UInt8]
        do {
            bytes = try Posix.read(file.fd, at: Int(file.offset) + offset, count: length)
        } catch {
            throw systemError(error)
        }
        guard bytes.count == length else {
            throw IVClientError(.system(SystemError(.pread, "pread of the shared memory (the file is shorter than its layout)", errno: EIO)),
                                socketPath: errorContext.socketPath, region: errorContext.region)
        }
        return bytes
    }

    // MARK: bytes

    /// The bytes `offset..<offset+length` in place, for the duration of
    /// `body`: no copy. They may change under you (the guest writes them too).
    public func withBytes<Result>(offset: Int, count length: Int, _ body: (RawSpan) -> Result) throws(IVClientError) -> Result {
        try checkRange(offset, length)
        return mapping.withBytes(offset: offset, count: length, body)
    }

    /// The same, writable in place.
    public func withMutableBytes<Result>(offset: Int, count length: Int,
                                         _ body: (inout MutableRawSpan) -> Result) throws(IVClientError) -> Result {
        try checkRange(offset, length)
        return mapping.withMutableBytes(offset: offset, count: length, body)
    }

    /// A copy of `length` bytes at `offset`.
    public func read(offset: Int, count length: Int) throws(IVClientError) -> [UInt8] {
        try checkRange(offset, length)
        return mapping.read(offset: offset, count: length)
    }

    public func write(_ bytes: some Collection<UInt8>, offset: Int) throws(IVClientError) {
        try checkRange(offset, bytes.count)
        mapping.write(bytes, offset: offset)
    }

    // MARK: 32-bit words, atomically (offsets 4-byte aligned)

    public func load(offset: Int) throws(IVClientError) -> UInt32 {
        try checkWord(offset)
        return mapping.load(offset: offset)
    }

    public func store(_ value: UInt32, offset: Int) throws(IVClientError) {
        try checkWord(offset)
        mapping.store(value, offset: offset)
    }

    /// Stores `value`; returns what the word held.
    public func exchange(_ value: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        try checkWord(offset)
        return mapping.exchange(value, offset: offset)
    }

    /// Stores `desired` if the word holds `expected`; returns what it held
    /// (equal to `expected` exactly when the store happened).
    public func compareExchange(expected: UInt32, desired: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        try checkWord(offset)
        return mapping.compareExchange(expected: expected, desired: desired, offset: offset)
    }

    /// Adds `value` (wrapping); returns the previous value.
    public func add(_ value: UInt32, offset: Int) throws(IVClientError) -> UInt32 {
        try checkWord(offset)
        return mapping.add(value, offset: offset)
    }

    // MARK: futex on a word

    /// Sleeps while the word at `offset` holds `expected`, until a wake on
    /// that word (from this or any process mapping the file) or the timeout.
    public func wait(offset: Int, expected: UInt32, timeout: Duration?) throws(IVClientError) -> FutexWaitResult {
        try checkWord(offset)
        do {
            return try mapping.wait(offset: offset, expected: expected, timeout: timeout)
        } catch {
            throw systemError(error)
        }
    }

    /// Wakes up to `count` waiters on the word at `offset`; how many woke.
    @discardableResult
    public func wake(offset: Int, count waiters: Int32 = Int32.max) throws(IVClientError) -> Int {
        try checkWord(offset)
        do {
            return try mapping.wake(offset: offset, count: waiters)
        } catch {
            throw systemError(error)
        }
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
