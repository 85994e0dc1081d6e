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
    /// shared mapping of the header's pages. On hugetlbfs the file is
    /// `size` rounded up to whole huge pages, all taken from the pool now
    /// (a pool too small is a StartupError). On any failure nothing is left
    /// behind.
    package static func create(path: String, size: UInt64, header: [UInt8] = [], mode: mode_t = 0o600) throws -> SharedMemoryFile {
        // Created with `mode` narrowed by the umask, then set to `mode`: it
        // is never wider than asked for.
        let raw = try Posix.retrying(.open, "create shared memory", path) {
            open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        }
        let fd = OwnedFD(taking: raw)
        let file = try CreatedFile(path: path)
        do {
            let fileSize = try shape(fd, size: size, mode: mode, path: path)
            if !header.isEmpty { try writeHeader(header, to: fd, path: path, hugePage: HugePages.pageSize(of: fd)) }
            return SharedMemoryFile(fd: fd, file: file, size: fileSize)
        } catch {
            file.remove()
            throw error
        }
    }

    /// Makes a file of `size` bytes in `directory` under a name of its own
    /// (as mkstemp picks one) and unlinks it at once: only the fd lives on,
    /// so nothing is left in the directory whatever happens (for a
    /// hugetlbfs mount such as /dev/hugepages).
    package static func createUnlinked(in directory: String, size: UInt64, mode: mode_t) throws -> SharedMemoryFile {
        guard let info = try Posix.linkStatus(directory) else { throw SystemError(.lstat, "shared-memory directory", directory, errno: ENOENT) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw StartupError(path: directory, reason: "is not a directory (-m takes a directory)") }
        for _ in 0..<100 {
            let path = "\(directory)/ivshmem.\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
            guard let fd = try createExclusively(path, mode: mode, directory: directory) else { continue }
            try Posix.removeName(path, "unlink the new shared memory")
            return SharedMemoryFile(fd: fd, file: nil, size: try shape(fd, size: size, mode: mode, path: directory))
        }
        throw StartupError(path: directory, reason: "could not find a free file name")
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

    /// `hugePage`: the file is on hugetlbfs (mapped in whole huge pages,
    /// every page already reserved).
    private static func writeHeader(_ header: [UInt8], to fd: OwnedFD, path: String, hugePage: UInt64?) throws(SystemError) {
        // Reserve the header's pages first: on a full tmpfs a store through
        // the mapping would be a SIGBUS, posix_fallocate is an ENOSPC.
        if hugePage == nil {
            let page = Int(getpagesize())
            let length = (header.count + page - 1) / page * page
            let reserved = posix_fallocate(fd.rawValue, 0, off_t(length))
            if reserved != 0 { throw SystemError(.fallocate, "reserve shared memory header", path, errno: reserved) }
        }
        let mapping: MappedMemory
        do {
            mapping = try MappedMemory(fd, offset: 0, count: header.count)
        } catch {
            throw SystemError(.mmap, "mmap shared memory", path, errno: error.errno)
        }
        mapping.write(header, offset: 0)
    }
}
