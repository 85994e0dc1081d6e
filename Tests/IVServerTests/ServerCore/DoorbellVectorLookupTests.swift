import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

@Suite("vectors= of the connected QEMU, kept per running process", .serialized)
struct DoorbellVectorLookupTests {
    let socket = "/run/ivs-test/qemu.sock"

    /// A process whose command line reads like a QEMU with `vectors`: a
    /// shell that naps in a loop (it must not exec, which would replace
    /// the arguments /proc shows).
    func fakeQemu(vectors: Int) throws -> pid_t {
        try spawn(["/bin/sh", "-c", "while :; do sleep 0.2; done", "qemu-system-x86_64",
                   "-chardev", "socket,path=\(socket),id=ivsh",
                   "-device", "ivshmem-doorbell,chardev=ivsh,vectors=\(vectors)"], logPath: "/dev/null")
    }

    func end(_ pid: pid_t) {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    func ownPidFDs() -> Int {
        openFDTargetsOfProcess(getpid()).filter { $0 == "anon_inode:[pidfd]" }.count
    }

    @Test("reads the command line, keeps the answer while the process runs, forgets it when it ends")
    func keptWhileRunning() throws {
        let lookup = DoorbellVectorLookup(socketPath: socket)
        let pidFDsBefore = ownPidFDs()
        let first = try fakeQemu(vectors: 3)
        #expect(eventually { lookup.vectors(ofProcess: first) == 3 })
        #expect(lookup.vectors(ofProcess: first) == 3)
        #expect(ownPidFDs() == pidFDsBefore + 1, "one pidfd remembers the process")

        let second = try fakeQemu(vectors: 5)
        #expect(eventually { lookup.vectors(ofProcess: second) == 5 })
        #expect(ownPidFDs() == pidFDsBefore + 1, "a new process replaces the old one")

        // Ended (and reaped): the kept answer is not given for its pid.
        end(second)
        #expect(lookup.vectors(ofProcess: second) == nil)
        #expect(ownPidFDs() == pidFDsBefore, "nothing is kept for a process that has ended")
        #expect(lookup.vectors(ofProcess: first) == 3)
        end(first)
        #expect(lookup.vectors(ofProcess: first) == nil)
        #expect(lookup.vectors(ofProcess: -1) == nil)
    }

    @Test("a pidfd tells whether its process still runs")
    func runningProcess() throws {
        let child = try fakeQemu(vectors: 1)
        let process = try #require(RunningProcess(pid: child))
        #expect(process.isRunning)
        kill(child, SIGKILL)
        #expect(eventually { !process.isRunning }, "exited, even before it is reaped")
        end(child)
        #expect(!process.isRunning)
        #expect(RunningProcess(pid: child) == nil, "a reaped pid has no process to hold")
        #expect(RunningProcess(pid: 0) == nil)
    }
}
