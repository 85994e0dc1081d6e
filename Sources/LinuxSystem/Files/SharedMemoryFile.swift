import Glibc

/// A shared-memory file: what QEMU maps as BAR2 and every host client
/// maps. Created fresh and sized sparsely (in whole huge pages, all taken
/// at once, on hugetlbfs); only the header pages are ever written here.
public final class SharedMemoryFile {
    public let fd: OwnedFD
    /// The file at the path, when it is this memory (an adopted memory's
    /// path may be gone).
    public let file: CreatedFile?
    public let size: UInt64

    package init(fd: OwnedFD, file: CreatedFile?, size: UInt64) {
        self.fd = fd
        self.file = file
        self.size = size
    }

    /// The inode of the memory, for logs.
    package var inode: UInt64 {
        (try? FileIdentity(of: fd).inode) ?? 0
    }

    /// The size of the file `fd` is open on.
    package static func size(of fd: OwnedFD, _ subject: String? = nil) throws(SystemError) -> UInt64 {
        UInt64(try Posix.status(fd, subject).st_size)
    }

    /// Creates `path` (it must not exist) with exactly `mode`, sizes it to
    /// `size` with ftruncate and writes `header` at offset 0 through a
    /// shared mapping of the header's pages. The pages of `reserving` (the
    /// header's are always among them) are taken from the filesystem now,
    /// so that touching them can never fault; with `preallocate`, every
    /// page. On hugetlbfs the file is `size` rounded up to whole huge
    /// pages, all taken from the pool now. A filesystem without the room is
    /// a StartupError; on any failure nothing is left behind.
    package static func create(path: String, size: UInt64, header: [UInt8] = [], mode: mode_t = 0o600,
                               reserving: [Range<UInt64>] = [], preallocate: Bool = false) throws -> SharedMemoryFile {
        // Created with `mode` narrowed by the umask, then set to `mode`: it
        // is never wider than asked for.
        let raw = try Posix.retrying(.open, "create shared memory", path) {
            open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        }
        let fd = OwnedFD(taking: raw)
        let file = try CreatedFile(path: path)
        do {
            let fileSize = try shape(fd, size: size, mode: mode, path: path)
            let memory = SharedMemoryFile(fd: fd, file: file, size: fileSize)
            // Reserved before the header is stored: on a full tmpfs a store
            // through the mapping would be a SIGBUS, fallocate is an ENOSPC.
            try memory.takePages(preallocate ? [0..<fileSize] : [0..<UInt64(header.count)] + reserving,
                                 whole: preallocate, path: path)
            if !header.isEmpty { try writeHeader(header, to: fd, path: path) }
            return memory
        } catch {
            file.remove()
            throw error
        }
    }

    /// Makes a file of `size` bytes in `directory` under a name of its own
    /// (as mkstemp picks one) and unlinks it at once: only the fd lives on,
    /// so nothing is left in the directory whatever happens (for a
    /// hugetlbfs mount such as /dev/hugepages).
    package static func createUnlinked(in directory: String, size: UInt64, mode: mode_t, preallocate: Bool = false) throws -> SharedMemoryFile {
        guard let info = try Posix.linkStatus(directory) else { throw SystemError(.lstat, "shared-memory directory", directory, errno: ENOENT) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw StartupError(path: directory, .notADirectory) }
        for _ in 0..<100 {
            let path = "\(directory)/ivshmem.\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
            guard let fd = try createExclusively(path, mode: mode, directory: directory) else { continue }
            try Posix.removeName(path, "unlink the new shared memory")
            let memory = SharedMemoryFile(fd: fd, file: nil, size: try shape(fd, size: size, mode: mode, path: directory))
            if preallocate { try memory.takePages([0..<memory.size], whole: true, path: directory) }
            return memory
        }
        throw StartupError(path: directory, .noFreeName)
    }

    /// A new file at `path`, or nil when that name is taken.
    private static func createExclusively(_ path: String, mode: mode_t, directory: String) throws(SystemError) -> OwnedFD? {
        let raw = try Posix.retrying(.open, "create shared memory in", directory) { () -> Int32 in
            let result = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
            // A taken name is not a failure: the caller picks another.
            if result < 0 && errno == EEXIST { return -2 }
            return result
        }
        return raw == -2 ? nil : OwnedFD(taking: raw)
    }

    /// Gives `fd` exactly `mode` and `size` bytes: whole huge pages on
    /// hugetlbfs, every one taken from the pool now (a pool too small is a
    /// StartupError). The size made.
    package static func shape(_ fd: OwnedFD, size: UInt64, mode: mode_t, path: String) throws -> UInt64 {
        try Posix.setMode(fd, mode, "chmod shared memory", path)
        let hugePage = HugePages.pageSize(of: fd)
        let fileSize = hugePage.map { HugePages.rounded(size, toPagesOf: $0) } ?? size
        try Posix.resize(fd, to: fileSize, "size shared memory (ftruncate)", path)
        if let hugePage { try HugePages.reserve(fd, size: fileSize, pageSize: hugePage, path: path) }
        return fileSize
    }

    private static func writeHeader(_ header: [UInt8], to fd: OwnedFD, path: String) throws(SystemError) {
        let mapping: MappedMemory
        do {
            mapping = try MappedMemory(fd, offset: 0, count: header.count)
        } catch {
            throw SystemError(.mmap, "mmap shared memory", path, errno: error.errno)
        }
        mapping.write(header, offset: 0)
    }

    // MARK: pages taken ahead of time

    /// Whether the memory is on hugetlbfs, whose pages were all taken from
    /// the pool when it was made.
    package var isOnHugePages: Bool { HugePages.pageSize(of: fd) != nil }

    /// Takes the pages of `ranges` from the filesystem now (`whole`: they
    /// are the whole memory, as --prealloc asks). A filesystem without room
    /// for them is a StartupError naming it, what it has free and what was
    /// needed. `path`: where the memory is, for messages.
    package func takePages(_ ranges: [Range<UInt64>], whole: Bool, path: String) throws {
        guard !isOnHugePages else { return }
        for range in ranges where !range.isEmpty {
            let clamped = MemoryPages.wholePages(range).clamped(to: 0..<size)
            let operation = whole ? "take every page of the shared memory (fallocate)" : "take the shared memory's signalling pages (fallocate)"
            let failure: SystemError
            do {
                try MemoryPages.reserve(fd, clamped, operation, path)
                continue
            } catch {
                failure = error
            }
            switch failure.errno {
            case ENOSPC, ENOMEM:
                // Measured only now, for the message: a failed fallocate
                // gives back what it took, so this is the room it met.
                let space = try MemoryPages.space(of: fd, path: path)
                let allocated = try MemoryPages.allocatedBytes(of: fd)
                let needed = whole ? size - min(size, allocated) : UInt64(clamped.count)
                throw StartupError(path: path, whole
                    ? .preallocationShort(filesystem: "\(space)", free: space.freeBytes, needed: needed)
                    : .signallingShort(errnoText: failure.errnoText, filesystem: "\(space)", free: space.freeBytes, needed: needed))
            case EOPNOTSUPP where !whole:
                // A filesystem that allocates another way (not tmpfs): its
                // pages are disk blocks, not taken here.
                continue
            default:
                throw failure
            }
        }
    }

    /// What the memory can still take from its filesystem as `touchable`
    /// (the bytes anyone may touch) is first touched, when that is more
    /// than the filesystem has free; nil when there is room (or on
    /// hugetlbfs, where every page was taken at start). Pages the memory
    /// holds already (a kept file, a restart) are not counted again.
    package func shortfall(touchable: [Range<UInt64>], path: String?) throws(SystemError) -> MemoryShortfall? {
        guard !isOnHugePages else { return nil }
        let pages = touchable.reduce(UInt64(0)) { $0 + UInt64(MemoryPages.wholePages($1.clamped(to: 0..<size)).count) }
        let allocated = try MemoryPages.allocatedBytes(of: fd)
        let needed = pages - min(pages, allocated)
        let space = try MemoryPages.space(of: fd, path: path)
        return needed > space.freeBytes ? MemoryShortfall(filesystem: space, needed: needed) : nil
    }
}
