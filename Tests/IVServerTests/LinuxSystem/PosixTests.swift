import Glibc
import Testing
@testable import LinuxSystem

@Suite("Posix: the one retry helper every call goes through")
struct PosixTests {
    @Test("EINTR is retried until the call completes; its result comes back")
    func retriesInterrupted() throws {
        var calls = 0
        let result = try Posix.retrying(.read) { () -> Int32 in
            calls += 1
            if calls < 4 { errno = EINTR; return -1 }
            return 7
        }
        #expect(result == 7 && calls == 4)
    }

    @Test("any other failure is a SystemError naming the call, what it was for and errno; made once")
    func failsWithTheCall() {
        var calls = 0
        #expect(throws: SystemError(.open, "open lock file", "/x", errno: EACCES)) {
            try Posix.retrying(.open, "open lock file", "/x") { () -> Int32 in
                calls += 1
                errno = EACCES
                return -1
            }
        }
        #expect(calls == 1)
    }

    @Test("would-block is a value where the caller can meet it, and an error elsewhere")
    func wouldBlock() throws {
        let none = try Posix.retryingUnlessWouldBlock(.read) { () -> Int in errno = EAGAIN; return -1 }
        #expect(none == nil)
        var calls = 0
        let done = try Posix.retryingUnlessWouldBlock(.read) { () -> Int in
            calls += 1
            if calls == 1 { errno = EINTR; return -1 }
            return 8
        }
        #expect(done == 8)
        #expect(throws: SystemError(.write, errno: EAGAIN)) { try Posix.retrying(.write) { () -> Int in errno = EAGAIN; return -1 } }
    }

    @Test("a NULL-terminated argv is built once: every string, then nil")
    func cStringArray() {
        let argv = CStringArray(["qemu-system-x86_64", "-display", "none", ""])
        withExtendedLifetime(argv) {
            #expect((0..<4).map { String(cString: argv.pointers[$0]!) } == ["qemu-system-x86_64", "-display", "none", ""])
            #expect(argv.pointers[4] == nil)
        }
        let empty = CStringArray([])
        withExtendedLifetime(empty) { #expect(empty.pointers[0] == nil) }
    }

    @Test("the link target of a descriptor, and nothing for a path that is none")
    func linkTarget() throws {
        let eventfd = try EventFD.create()
        #expect(Posix.linkTarget("/proc/self/fd/\(eventfd.rawValue)") == "anon_inode:[eventfd]")
        #expect(Posix.linkTarget("/proc/self/fd/999999") == nil)
        #expect(try Posix.pathStatus("/nonexistent/ivs") == nil)
        #expect(try Posix.pathStatus("/proc") != nil)
    }
}
