import Glibc

/// Reads a whole (small) file, naming the path in any error: the one file
/// reader of the system layer.
package enum FileContents {
    package static let maximumSize = 16 << 20

    /// The file at `path`. The first read takes up to `firstRead` bytes
    /// into uninitialized memory; a read that does not fill it ends the
    /// file for procfs, which answers one read with everything that fits,
    /// so a /proc entry costs one open, one read and one close.
    package static func read(path: String, firstRead: Int = 16 << 10) throws(SystemError) -> [UInt8] {
        let fd = OwnedFD(taking: try Posix.retrying(.open, nil, path) { open(path, O_RDONLY | O_CLOEXEC) })
        var contents = try chunk(fd, path, count: firstRead)
        if contents.count < firstRead && path.hasPrefix("/proc/") { return contents }
        while true {
            let more = try chunk(fd, path, count: 64 << 10)
            if more.isEmpty { return contents }
            contents += more
            if contents.count > maximumSize { throw SystemError(.read, nil, "\(path) (larger than 16 MiB)", errno: EFBIG) }
        }
    }

    /// A procfs entry, or nil when it cannot be read (the process is gone,
    /// or another user's).
    package static func procEntry(_ path: String) -> [UInt8]? {
        try? read(path: path)
    }

    private static func chunk(_ fd: OwnedFD, _ path: String, count: Int) throws(SystemError) -> [UInt8] {
        var failure: SystemError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let outcome = Result { () throws(SystemError) -> Int in
                try Posix.retrying(.read, nil, path) { Glibc.read(fd.rawValue, buffer.baseAddress, count) }
            }
            switch outcome {
            case let .success(read): initialized = read
            case let .failure(error): failure = error
            }
        }
        if let failure { throw failure }
        return bytes
    }
}
