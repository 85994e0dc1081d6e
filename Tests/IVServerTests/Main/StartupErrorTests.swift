import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

@Suite("ivserver start-up errors", .serialized)
struct StartupErrorTests {
    @Test("an invalid layout exits 2, lists every problem and creates nothing")
    func invalidLayout() throws {
        let directory = TemporaryDirectory()
        let layout = directory.path + "/bad.json"
        writeText(layoutJSON(regionJSON(name: "\"a\"", size: "0"), regionJSON(name: "\"a\"")), to: layout)
        let result = try runIVServer(["--layout", layout, "--shm-path", directory.path + "/shm",
                                      "--qemu-sock", directory.path + "/q", "--client-sock", directory.path + "/c"], in: directory)
        #expect(result.status == 2)
        #expect(result.output.contains("invalid layout \(layout) (2 problems):"))
        #expect(result.output.contains("region 'a': region_size 0 is out of range 1...4294967295"))
        #expect(result.output.contains("region 'a': device_name duplicates region #0 (this is region #1)"))
        #expect(directory.entries() == ["bad.json"])
    }

    @Test("bad JSON names line and column; a missing layout names the path; both exit 2")
    func unreadableLayouts() throws {
        let directory = TemporaryDirectory()
        writeText("{\n  \"vsoc_device_regions\": [\n}\n", to: directory.path + "/broken.json")
        let broken = try runIVServer(["--layout", directory.path + "/broken.json", "--shm-path", directory.path + "/shm"], in: directory)
        #expect(broken.status == 2)
        #expect(broken.output.contains("bad JSON at line 3, column 1"))
        let missing = try runIVServer(["--layout", directory.path + "/missing.json", "--shm-path", directory.path + "/shm"], in: directory)
        #expect(missing.status == 2)
        #expect(missing.output.contains("cannot read \(directory.path)/missing.json: No such file or directory"))
        #expect(directory.entries() == ["broken.json"])
    }

    @Test("argument errors exit 64 with usage", arguments: [
        ["--bogus"], ["--log-level", "loud"], ["--shm-path", ""], ["--qemu-sock", "/tmp/x", "--client-sock", "/tmp/x"], ["extra"],
    ])
    func usageErrors(arguments: [String]) throws {
        let directory = TemporaryDirectory()
        let result = try runIVServer(arguments, in: directory)
        #expect(result.status == 64, "\(arguments): \(result.output)")
        #expect(result.output.contains("Usage: ivserver"), "\(result.output)")
    }

    @Test("--version and --help exit 0")
    func versionAndHelp() throws {
        let directory = TemporaryDirectory()
        let version = try runIVServer(["--version"], in: directory)
        #expect(version.status == 0)
        #expect(version.output == IVServerVersion.string + "\n")
        let overview = try runIVServer(["--help"], in: directory)
        #expect(overview.status == 0)
        for subcommand in ["serve (default)", "launch", "qemu-args", "layout"] { #expect(overview.output.contains(subcommand)) }
        let help = try runIVServer(["serve", "--help"], in: directory)
        #expect(help.status == 0)
        for flag in ["--layout", "--shm-path", "--qemu-sock", "--client-sock", "--log-level", "/dev/shm/ivshmem", "/tmp/ivshmem_socket_qemu"] {
            #expect(help.output.contains(flag))
        }
    }

    @Test("a shared-memory path holding a file ivserver did not make is not touched: exit 1, one line naming the path")
    func existingSharedMemory() throws {
        let directory = TemporaryDirectory()
        writeText("keep me", to: directory.path + "/shm")
        let result = try runIVServer(["--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/q",
                                      "--client-sock", directory.path + "/c"], in: directory)
        #expect(result.status == 1)
        #expect(result.output.contains("\(directory.path)/shm: exists but holds no vSoC layout, so ivserver did not make it"))
        #expect(readText(directory.path + "/shm") == "keep me")
        #expect(directory.entries() == ["shm"])
    }

    @Test("a socket that cannot be created removes what was made before it", arguments: [
        "long", "missing-directory", "in-use",
    ])
    func socketFailures(kind: String) throws {
        let directory = TemporaryDirectory()
        var clientSocket = directory.path + "/c"
        var listener: OwnedFD?
        switch kind {
        case "long": clientSocket = directory.path + "/" + String(repeating: "s", count: 120)
        case "missing-directory": clientSocket = directory.path + "/no/such/dir/c"
        default: listener = try UnixSocket.listen(path: clientSocket)
        }
        let result = try runIVServer(["--shm-path", directory.path + "/shm", "--qemu-sock", directory.path + "/q",
                                      "--client-sock", clientSocket], in: directory)
        #expect(result.status == 1, "\(kind): \(result.output)")
        #expect(result.output.contains(clientSocket))
        #expect(directory.entries() == (listener == nil ? [] : ["c"]), "\(kind): left \(directory.entries())")
        withExtendedLifetime(listener) {}
    }
}
