import ServerCore
import Glibc
import LinuxSystem

/// The vSoC mode's rules for its shared-memory file: what may be taken over
/// from a previous server process of this VM, and what a dead server left.
extension SharedMemoryFile {
    /// The memory a previous server process of this VM created (handed
    /// over through the service manager or a re-exec), if it is exactly
    /// `size` bytes and starts with `header`: what a VM already maps must
    /// not change under it.
    static func takeOver(_ fd: OwnedFD, path: String, size: UInt64, header: [UInt8]) throws(HandoverError) -> SharedMemoryFile {
        let info: stat
        do { info = try Posix.status(fd, "the handed-back shared memory") } catch { throw .sharedMemoryUnreadable(error) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .sharedMemoryNotARegularFile }
        // On hugetlbfs the file is the layout's size in whole huge pages.
        let expected = HugePages.pageSize(of: fd).map { HugePages.rounded(size, toPagesOf: $0) } ?? size
        guard UInt64(info.st_size) == expected else { throw .sharedMemorySize(actual: UInt64(info.st_size), expected: expected) }
        let start: [UInt8]
        do { start = try Posix.read(fd, at: 0, count: header.count, "the handed-back shared memory") } catch { throw .sharedMemoryUnreadable(error) }
        guard start == header else { throw .sharedMemoryHeader }
        let atPath = try? FileIdentity.at(path)
        let samePath = atPath == FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
        return SharedMemoryFile(fd: fd, file: samePath ? try? CreatedFile(path: path) : nil, size: expected)
    }

    /// Removes a shared-memory file that a server left behind (it crashed or
    /// was killed). Only a regular file whose first bytes are a vSoC layout
    /// descriptor counts: ivserver never deletes what it did not make. Call
    /// it only while holding the instance lock. True when a file was removed.
    ///
    /// A leftover that a live process still holds open or maps (a VM of the
    /// crashed server) is not replaced, unless `replacingHeld`: a new file
    /// would split that VM from every host client served from now on.
    static func removeLeftover(path: String, replacingHeld: Bool = false) throws -> Bool {
        switch try ExistingPath.inspect(path) {
        case .absent:
            return false
        case let existing:
            guard case let .other(mode) = existing, mode & S_IFMT == S_IFREG else {
                throw StartupError(path: path, .wrongKind(found: existing.kindDescription, wanted: "a shared-memory file"))
            }
        }
        let fd = try Posix.openExisting(path, writable: false)
        let descriptor = try Posix.read(fd, at: 0, count: 16, path)
        let isLayout = descriptor.count == 16 && descriptor[0...3] == [2, 0, 0, 0] && descriptor[12...15] == [16, 0, 0, 0]
        guard isLayout else {
            throw StartupError(path: path, .holdsNoLayout)
        }
        if !replacingHeld, let holder = ProcFS.holders(ofFileAt: path).first {
            throw StartupError(path: path, .leftoverHeld(holder: ProcFS.describe(holder)))
        }
        try Posix.removeName(path, "remove leftover shared memory")
        return true
    }
}
