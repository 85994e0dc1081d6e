import CLinux
import Glibc

/// Memory on a hugetlbfs mount: its page size, and the kernel's pool the
/// pages come from. On hugetlbfs a file's size must be a whole number of
/// huge pages, and pages are taken from a pool fixed by the administrator
/// (/proc/sys/vm/nr_hugepages), so running out is an error at start-up
/// here rather than a SIGBUS in a guest later.
package enum HugePages {
    /// The huge page size when `fd` is on hugetlbfs, else nil.
    package static func pageSize(of fd: OwnedFD) -> UInt64? {
        let size = ivs_hugetlbfs_page_size(fd.rawValue)
        return size > 0 ? UInt64(size) : nil
    }

    /// `size` rounded up to whole pages of `pageSize`.
    package static func rounded(_ size: UInt64, toPagesOf pageSize: UInt64) -> UInt64 {
        (size + pageSize - 1) / pageSize * pageSize
    }

    /// Takes every page of `fd` (`size` bytes, whole huge pages) from the
    /// pool now; a pool too small is a StartupError saying how many pages
    /// are free and what to raise.
    package static func reserve(_ fd: OwnedFD, size: UInt64, pageSize: UInt64, path: String) throws {
        // Counted before: a failed fallocate holds what it got until the fd closes.
        let freeBefore = freePages(ofSize: pageSize)
        let result = ivs_fallocate(fd.rawValue, 0, Int64(size))
        guard result != 0 else { return }
        let code = errno
        guard code == ENOSPC || code == ENOMEM else { throw SystemError(.fallocate, "reserve huge pages (fallocate)", path, errno: code) }
        let needed = size / pageSize
        let total = totalPages(ofSize: pageSize) ?? 0
        throw StartupError(path: path, .hugePagesShort(needed: needed, pageSize: pageSize, free: freeBefore, total: total,
                                                       poolFile: poolFile(pageSize, "nr_hugepages")))
    }

    package static func freePages(ofSize pageSize: UInt64) -> UInt64? {
        readNumber(poolFile(pageSize, "free_hugepages"))
    }

    package static func totalPages(ofSize pageSize: UInt64) -> UInt64? {
        readNumber(poolFile(pageSize, "nr_hugepages"))
    }

    private static func poolFile(_ pageSize: UInt64, _ name: String) -> String {
        "/sys/kernel/mm/hugepages/hugepages-\(pageSize / 1024)kB/\(name)"
    }

    private static func readNumber(_ path: String) -> UInt64? {
        guard let bytes = try? FileContents.read(path: path) else { return nil }
        return UInt64(String(decoding: bytes.prefix { $0 >= 48 && $0 <= 57 }, as: UTF8.self))
    }
}
