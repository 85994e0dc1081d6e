import Glibc

/// Reads a whole (small) file, naming the path in any error: the one file
/// reader of the system layer.
package enum FileContents {
    package static let maximumSize = 16 << 20

    /// The file at `path`. The first read takes up to `firstRead` bytes
    /// into uninitialized memory; for a /proc entry a read that does not
    /// fill it is the whole entry (procfs answers one read with everything
    /// that fits), so an entry costs one open, one read and one close.
    package static func read(path: String, firstRead: Int = 16 << 10) throws(SystemError) -> [UInt8] {
        let fd = OwnedFD(taking: try Posix.retrying(.open, nil, path) { open(path, O_RDONLY | O_CLOEXEC) })
        return try read(fd: fd.rawValue, name: path, firstRead: firstRead, shortReadEnds: path.hasPrefix("/proc/"))
    }

    /// Everything `fd` has to its end (standard input, a pipe), naming
    /// `name` in errors. The caller keeps the fd.
    package static func read(fd: Int32, name: String, firstRead: Int = 64 << 10, shortReadEnds: Bool = false,
                             maximum: Int = maximumSize) throws(SystemError) -> [UInt8] {
        var contents = try chunk(fd, name, count: firstRead)
        if shortReadEnds && contents.count < firstRead { return contents }
        while true {
            let more = try chunk(fd, name, count: 64 << 10)
            if more.isEmpty { return contents }
            contents += more
            if contents.count > maximum { throw SystemError(.read, nil, "\(name) (larger than \(MemorySize.approximate(UInt64(maximum))))", errno: EFBIG) }
        }
    }

    /// A procfs entry, or nil when it cannot be read (the process is gone,
    /// or another user's).
    package static func procEntry(_ path: String) -> [UInt8]? {
        try? read(path: path)
    }

    private static func chunk(_ fd: Int32, _ name: String, count: Int) throws(SystemError) -> [UInt8] {
        var failure: SystemError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let outcome = Result { () throws(SystemError) -> Int in
                try Posix.retrying(.read, nil, name) { Glibc.read(fd, buffer.baseAddress, count) }
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
