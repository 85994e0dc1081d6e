import Glibc
import LinuxSystem

/// The shared-memory file behind QEMU's BAR2 and every host client's map.
/// Created fresh, sized sparsely, and only the header pages are ever touched
/// by the server.
public final class SharedMemoryFile {
    public let fd: OwnedFD
    /// The file at the path, when it is this memory (an adopted memory's
    /// path may be gone).
    public let file: CreatedFile?
    public let size: UInt64

    init(fd: OwnedFD, file: CreatedFile?, size: UInt64) {
        self.fd = fd
        self.file = file
        self.size = size
    }

    /// The memory a previous server process of this VM created (handed
    /// back by the service manager), if it is exactly `size` bytes and
    /// starts with `header`: what a VM already maps must not change under it.
    static func adopt(_ fd: OwnedFD, path: String, size: UInt64, header: [UInt8]) throws(ResumeError) -> SharedMemoryFile {
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw ResumeError("the handed-back shared memory is not a regular file")
        }
        // On hugetlbfs the file is the layout's size in whole huge pages.
        let expected = HugePages.pageSize(of: fd).map { HugePages.rounded(size, toPagesOf: $0) } ?? size
        guard UInt64(info.st_size) == expected else {
            throw ResumeError("the handed-back shared memory is \(info.st_size) bytes, the layout needs \(expected)")
        }
        var bytes = [UInt8](repeating: 0, count: header.count)
        guard pread(fd.rawValue, &bytes, bytes.count, 0) == bytes.count, bytes == header else {
            throw ResumeError("the handed-back shared memory holds another layout header than the layout being served")
        }
        var atPath = stat()
        let samePath = lstat(path, &atPath) == 0 && atPath.st_dev == info.st_dev && atPath.st_ino == info.st_ino
        return SharedMemoryFile(fd: fd, file: samePath ? try? CreatedFile(path: path) : nil, size: expected)
    }

    /// The inode of the memory, for logs.
    var inode: UInt64 {
        var info = stat()
        return fstat(fd.rawValue, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    /// Removes a shared-memory file that a server left behind (it crashed or
    /// was killed). Only a regular file whose first bytes are a vSoC layout
    /// descriptor counts: ivserver never deletes what it did not make. Call
    /// it only while holding the instance lock. True when a file was removed.
    ///
    /// A leftover that a live process still holds open or maps (a VM of the
    /// crashed server) is not replaced, unless `replacingHeld`: a new file
    /// would split that VM from every host client served from now on.
    public static func removeLeftover(path: String, replacingHeld: Bool = false) throws -> Bool {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return false
        case let existing:
            guard case let .other(mode) = existing, mode & S_IFMT == S_IFREG else {
                throw StartupError(path: path, reason: "exists and is \(existing.kindDescription), not a shared-memory file")
            }
        }
        let fd = OwnedFD(taking: try Posix.retrying(.open, nil, path) { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) })
        var descriptor = [UInt8](repeating: 0, count: 16)
        let count = pread(fd.rawValue, &descriptor, 16, 0)
        let isLayout = count == 16 && descriptor[0...3] == [2, 0, 0, 0] && descriptor[12...15] == [16, 0, 0, 0]
        guard isLayout else {
            throw StartupError(path: path, reason: "exists but holds no vSoC layout, so ivserver did not make it; not replacing it (remove it or pick another --shm-path)")
        }
        if !replacingHeld, let holder = ProcessTable.holders(ofFileAt: path).first {
            let command = ProcessTable.commandLine(of: holder).map { $0.prefix(3).joined(separator: " ") } ?? "?"
            throw StartupError(path: path, reason: "left by an ivserver that did not stop cleanly, and process \(holder) (\(command)) "
                + "still holds it: a new memory would split that VM from its host clients. Stop that VM first, or start "
                + "with --replace-held-memory to replace it anyway")
        }
        try Posix.retrying(.unlink, "remove leftover shared memory", path) { unlink(path) }
        return true
    }

    /// Creates `path` (it must not exist) with exactly `mode`, sizes it to
    /// `size` with ftruncate and writes `header` at offset 0 through a
    /// shared mapping of the header's pages. On hugetlbfs the file is
    /// `size` rounded up to whole huge pages, all taken from the pool now
    /// (a pool too small is a StartupError). On any failure nothing is left
    /// behind.
    public static func create(path: String, size: UInt64, header: [UInt8], mode: mode_t = 0o600) throws -> SharedMemoryFile {
        // Created with `mode` narrowed by the umask, then set to `mode`: it
        // is never wider than asked for.
        let raw = try Posix.retrying(.open, "create shared memory", path) {
            open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        }
        let fd = OwnedFD(taking: raw)
        do {
            let file = try CreatedFile(path: path)
            do {
                try Posix.retrying(.chmod, "chmod shared memory", path) { fchmod(fd.rawValue, mode) }
                let hugePage = HugePages.pageSize(of: fd)
                let fileSize = hugePage.map { HugePages.rounded(size, toPagesOf: $0) } ?? size
                try Posix.retrying(.ftruncate, "size shared memory (ftruncate)", path) { ftruncate(fd.rawValue, off_t(fileSize)) }
                if let hugePage { try HugePages.reserve(fd, size: fileSize, pageSize: hugePage, path: path) }
                try writeHeader(header, to: fd, path: path, hugePage: hugePage)
                return SharedMemoryFile(fd: fd, file: file, size: fileSize)
            } catch {
                file.remove()
                throw error
            }
        }
    }

    /// `hugePage`: the file is on hugetlbfs (mapped in whole huge pages,
    /// every page already reserved).
    private static func writeHeader(_ header: [UInt8], to fd: OwnedFD, path: String, hugePage: UInt64?) throws(SystemError) {
        let page = Int(hugePage ?? UInt64(LayoutPlanner.pageSize))
        let length = (header.count + page - 1) / page * page
        // Reserve the header's pages first: on a full tmpfs a store through
        // the mapping would be a SIGBUS, posix_fallocate is an ENOSPC.
        if hugePage == nil {
            let reserved = posix_fallocate(fd.rawValue, 0, off_t(length))
            if reserved != 0 { throw SystemError(.fallocate, "reserve shared memory header", path, errno: reserved) }
        }
        guard let mapping = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0),
              mapping != MAP_FAILED
        else { throw SystemError(.mmap, "mmap shared memory", path) }
        defer { munmap(mapping, length) }
        header.withUnsafeBytes { mapping.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}
