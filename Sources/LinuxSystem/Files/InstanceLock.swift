import Glibc
import Synchronization

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
            guard let (fd, created) = try openOrCreateNamingDirectory(path) else { continue }
            let isOurs: Bool
            do {
                let locked = try Posix.retryingUnlessWouldBlock(.flock, "lock", path) { flock(fd.rawValue, LOCK_EX | LOCK_NB) }
                guard locked != nil else {
                    let owner = readPID(fd).map { "pid \($0)" } ?? "unknown pid"
                    throw StartupError(path: path, .lockHeld(owner: owner))
                }
                isOurs = try FileIdentity.at(path) == FileIdentity(of: fd)
            } catch {
                // A file this call made, and nobody else locked, goes again:
                // a failed start leaves nothing behind.
                if created, error is SystemError { try? Posix.removeName(path, "remove lock file") }
                throw error
            }
            guard isOurs else { continue }
            let lock = InstanceLock(path: path, fd: fd)
            lock.recordOwner()
            held.withLock { $0.append(Weak(lock)) }
            return lock
        }
        throw StartupError(path: path, .lockKeepsChanging)
    }

    /// The lock file, opened or made (`created`); nil when another process
    /// made it between our two tries (try again).
    private static func openOrCreate(_ path: String) throws(SystemError) -> (fd: OwnedFD, created: Bool)? {
        do {
            return (OwnedFD(taking: try Posix.retrying(.open, "open lock file", path) { open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW) }), false)
        } catch where error.errno != ENOENT {
            throw error
        } catch {}
        do {
            return (OwnedFD(taking: try Posix.retrying(.open, "create lock file", path) {
                open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
            }), true)
        } catch where error.errno == EEXIST {
            return nil
        }
    }

    /// The lock file, opened or made; a missing directory is said as such.
    private static func openOrCreateNamingDirectory(_ path: String) throws -> (fd: OwnedFD, created: Bool)? {
        let failure: SystemError
        do {
            return try openOrCreate(path)
        } catch {
            failure = error
        }
        if failure.errno == ENOENT, let missing = StartupError.missingDirectory(of: path) { throw missing }
        throw failure
    }

    /// Writes this process's pid into the lock file. The pid is for
    /// messages only, so writing it is best effort (a full file system
    /// leaves it empty: "unknown pid"), and it is padded to a fixed width so
    /// that no truncation is needed.
    private func recordOwner() {
        guard fd.isOpen else { return }
        let pid = "\(getpid())\n"
        let text = Array((pid + String(repeating: " ", count: max(0, Self.pidFieldWidth - pid.utf8.count))).utf8)
        _ = try? Posix.retrying(.pwrite, "write lock file", path) { pwrite(fd.rawValue, text, text.count, 0) }
    }

    /// The locks this process holds, to name their new owner when it goes
    /// to the background (a forked child inherits the flock, and the
    /// parent that wrote its pid exits).
    private static let held = Mutex<[Weak]>([])

    private final class Weak: @unchecked Sendable {
        weak var lock: InstanceLock?
        init(_ lock: InstanceLock) { self.lock = lock }
    }

    /// After a fork that leaves the child holding the locks: every held
    /// lock file names this process.
    public static func recordOwnerAfterFork() {
        held.withLock { locks in
            locks.removeAll { $0.lock == nil }
            for entry in locks { entry.lock?.recordOwner() }
        }
    }

    /// "<pid>\n" and spaces: wide enough for any pid.
    private static let pidFieldWidth = 16

    /// Removes the lock file while still holding the lock, then releases it.
    public func release() {
        guard fd.isOpen else { return }
        // Gone already (a runtime directory removed) is as good.
        _ = try? Posix.retrying(.unlink, "remove lock file", path) { unlink(path) }
        fd.close()
    }

    deinit { release() }

    private static func readPID(_ fd: OwnedFD) -> Int32? {
        guard let bytes = try? Posix.read(fd, at: 0, count: 32) else { return nil }
        // the file holds "<pid>\n"
        let digits = bytes.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        return Int32(String(decoding: digits, as: UTF8.self))
    }
}
