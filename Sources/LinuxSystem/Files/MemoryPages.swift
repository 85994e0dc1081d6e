import CLinux
import Glibc

/// The filesystem a shared memory's pages come from (a tmpfs such as
/// /dev/shm or a container's 64 MiB one, or hugetlbfs), and what it has
/// free. The memory is a sparse file: a page is taken from the filesystem
/// only when a process first touches it, and when none is left then, that
/// process dies of SIGBUS (QEMU, the whole VM, or a host client).
public struct FileSystemSpace: Equatable, Sendable, CustomStringConvertible {
    /// "tmpfs", "hugetlbfs", … ("filesystem" when /proc does not say).
    public var type: String
    /// Where it is mounted, when /proc says.
    public var mountPoint: String?
    public var sizeBytes: UInt64
    public var freeBytes: UInt64

    public init(type: String, mountPoint: String?, sizeBytes: UInt64, freeBytes: UInt64) {
        self.type = type
        self.mountPoint = mountPoint
        self.sizeBytes = sizeBytes
        self.freeBytes = freeBytes
    }

    /// "the tmpfs at /dev/shm (64 MiB)"
    public var description: String {
        "the \(type)" + (mountPoint.map { " at \($0)" } ?? "") + " (\(MemorySize.approximate(sizeBytes)))"
    }
}

/// A memory that can take more pages from its filesystem than it has
/// free: touching them all would end in a SIGBUS.
public struct MemoryShortfall: Equatable, Sendable {
    public var filesystem: FileSystemSpace
    /// Bytes the memory can still take as its pages are first touched.
    public var needed: UInt64

    public init(filesystem: FileSystemSpace, needed: UInt64) {
        self.filesystem = filesystem
        self.needed = needed
    }

    public var free: UInt64 { filesystem.freeBytes }
}

/// Taking a file's pages ahead of time (fallocate), and what its
/// filesystem has free.
package enum MemoryPages {
    package static var pageSize: UInt64 { UInt64(getpagesize()) }

    /// `range` rounded out to whole pages of `page`.
    package static func wholePages(_ range: Range<UInt64>, page: UInt64 = pageSize) -> Range<UInt64> {
        let lower = range.lowerBound / page * page
        let upper = (range.upperBound + page - 1) / page * page
        return lower..<upper
    }

    /// Takes the pages of `range` from the filesystem now, zeroed where
    /// they were holes, their data kept where not (the range lies within
    /// the file: past its end, fallocate would grow it). ENOSPC (or
    /// ENOMEM) when the filesystem cannot give them: the error a later
    /// touch would have been a SIGBUS for.
    package static func reserve(_ fd: OwnedFD, _ range: Range<UInt64>, _ operation: String, _ subject: String?) throws(SystemError) {
        guard !range.isEmpty else { return }
        try Posix.retrying(.fallocate, operation, subject) {
            ivs_fallocate(fd.rawValue, Int64(range.lowerBound), Int64(range.count))
        }
    }

    /// The bytes of `fd` that have pages already (a sparse file's holes have none).
    package static func allocatedBytes(of fd: OwnedFD) throws(SystemError) -> UInt64 {
        UInt64(try Posix.status(fd).st_blocks) * 512
    }

    /// The filesystem `fd` is on, and what it has free. `path`: where the
    /// file is (or was made), to pick the right mount among several of one
    /// device.
    package static func space(of fd: OwnedFD, path: String?) throws(SystemError) -> FileSystemSpace {
        var counts = statvfs()
        try Posix.retrying(.fstat, "statvfs", path) { fstatvfs(fd.rawValue, &counts) }
        let info = try Posix.status(fd, path)
        let mount = (try? FileContents.read(path: "/proc/self/mountinfo")).flatMap {
            Self.mount(inMountInfo: String(decoding: $0, as: UTF8.self), device: info.st_dev, path: path)
        }
        let unit = UInt64(counts.f_frsize)
        return FileSystemSpace(type: mount?.type ?? "filesystem", mountPoint: mount?.point,
                               sizeBytes: UInt64(counts.f_blocks) * unit, freeBytes: UInt64(counts.f_bavail) * unit)
    }

    /// The mount of `device` in /proc/self/mountinfo's text: the one whose
    /// mount point holds `path` most closely, else the last listed.
    static func mount(inMountInfo text: String, device: dev_t, path: String?) -> (type: String, point: String)? {
        let wanted = "\(Self.major(device)):\(Self.minor(device))"
        var best: (type: String, point: String)?
        var bestLength = -1
        for line in text.split(separator: "\n") {
            // id parent major:minor root mount-point options… - type source super-options
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4, fields[2] == wanted, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            let point = unescapeMountField(fields[4])
            let type = String(fields[dash + 1])
            let holds = path.map { $0 == point || $0.hasPrefix(point == "/" ? "/" : point + "/") } ?? false
            let length = holds ? point.utf8.count : -1
            if best == nil || length >= bestLength {
                best = (type, point)
                bestLength = length
            }
        }
        return best
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescapeMountField(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "\\"), index + 4 <= utf8.count,
               let value = UInt8(String(decoding: utf8[(index + 1)..<(index + 4)], as: UTF8.self), radix: 8) {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func major(_ device: dev_t) -> UInt64 {
        let value = UInt64(device)
        return ((value >> 8) & 0xfff) | ((value >> 32) & ~0xfff)
    }

    static func minor(_ device: dev_t) -> UInt64 {
        let value = UInt64(device)
        return (value & 0xff) | ((value >> 12) & ~0xff)
    }
}
