import Glibc
import LinuxSystem

/// An exclusive flock on `<shared-memory path>.lock`, taken before any other
/// path is touched, so two servers can never share one VM's files. flock
/// dies with its process, so a crashed server never blocks its successor;
/// the lock file holds the owner's pid for the error message.
public final class InstanceLock {
    public let path: String
    private let fd: OwnedFD

    private init(path: String, fd: OwnedFD) {
        self.path = path
        self.fd = fd
    }

    /// Takes the lock or throws, naming the pid that holds it.
    public static func acquire(path: String) throws -> InstanceLock {
        // A holder that exits unlinks the file while still holding the lock,
        // so a waiter may lock a file that is no longer at `path`: retry then.
        for _ in 0..<8 {
            var raw = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            if raw < 0 && errno == ENOENT {
                raw = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
                if raw < 0 && errno == EEXIST { continue }
            }
            guard raw >= 0 else { throw SystemError(.open, "open lock file", path) }
            let fd = OwnedFD(taking: raw)
            if flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
                guard errno == EWOULDBLOCK else { throw SystemError(.flock, "lock", path) }
                let owner = readPID(fd).map { "pid \($0)" } ?? "unknown pid"
                throw StartupError(path: path, reason: "another ivserver (\(owner)) holds this lock and is serving these paths; nothing was changed")
            }
            var opened = stat()
            var current = stat()
            guard fstat(fd.rawValue, &opened) == 0, lstat(path, &current) == 0,
                  opened.st_dev == current.st_dev, opened.st_ino == current.st_ino
            else { continue }
            var text = "\(getpid())\n"
            _ = ftruncate(fd.rawValue, 0)
            _ = text.withUTF8 { pwrite(fd.rawValue, $0.baseAddress, $0.count, 0) }
            return InstanceLock(path: path, fd: fd)
        }
        throw StartupError(path: path, reason: "the lock file keeps changing under us; is another ivserver starting?")
    }

    /// Removes the lock file while still holding the lock, then releases it.
    public func release() {
        guard fd.isOpen else { return }
        _ = unlink(path)
        fd.close()
    }

    deinit { release() }

    private static func readPID(_ fd: OwnedFD) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = pread(fd.rawValue, &bytes, bytes.count, 0)
        guard count > 0 else { return nil }
        // the file holds "<pid>\n"
        let digits = bytes[..<count].prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        return Int32(String(decoding: digits, as: UTF8.self))
    }
}
