import Glibc

/// The plain file calls the servers make on a path or a file's fd, so
/// that no server target calls the C library itself. Each failure is a
/// SystemError naming the call, with `operation` and the path as given.
extension Posix {
    /// The existing file at `path`, opened close-on-exec, never created
    /// and never reached through a final symbolic link.
    package static func openExisting(_ path: String, writable: Bool, _ operation: String? = nil) throws(SystemError) -> OwnedFD {
        let flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW
        return OwnedFD(taking: try retrying(.open, operation, path) { open(path, flags) })
    }

    /// Removes the name `path` (unlink).
    package static func removeName(_ path: String, _ operation: String? = nil) throws(SystemError) {
        try retrying(.unlink, operation, path) { unlink(path) }
    }

    /// Sets the size of the file `fd` (ftruncate); `subject` names it.
    package static func resize(_ fd: OwnedFD, to size: UInt64, _ operation: String? = nil, _ subject: String? = nil) throws(SystemError) {
        try retrying(.ftruncate, operation, subject) { ftruncate(fd.rawValue, off_t(size)) }
    }

    /// Sets the permission bits of the file `fd` (fchmod); `subject` names it.
    package static func setMode(_ fd: OwnedFD, _ mode: mode_t, _ operation: String? = nil, _ subject: String? = nil) throws(SystemError) {
        try retrying(.chmod, operation, subject) { fchmod(fd.rawValue, mode) }
    }
}
