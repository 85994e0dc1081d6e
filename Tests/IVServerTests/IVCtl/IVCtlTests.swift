import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVClient
@testable import IVServer

/// The `ivctl` binary against a live ivserver: output and exit codes.
@Suite("ivctl", .serialized)
struct IVCtlTests {
    let plan = LayoutLoader.loadDefault()

    @Test("regions prints the live table, the same columns as `ivserver layout`")
    func regions() throws {
        let server = try ServerProcess()
        let result = try ivctl(["regions"], server: server)
        #expect(result.status == 0, "\(result.errors)")
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "layout at \(server.clientSocketPath): 8 regions, version 2.0, shared memory 536870912 bytes (0x20000000)")
        let layout = try runIVServer(["layout"], in: TemporaryDirectory())
        let layoutLines = layout.output.split(separator: "\n").map(String.init)
        #expect(Array(lines[1...9]) == Array(layoutLines[1...9]), "header row and 8 regions")
        #expect(lines[1].hasPrefix("#  name") && lines[9].hasPrefix("7  e2e_managed"))
        #expect(lines[10] == "offsets of tables, words and data are relative to the region's begin")
        #expect(server.stop() == 0)

        // a layout with none of Cuttlefish's names: the layout request needs no name
        let custom = try ServerProcess(layoutJSON: unalignedLayoutJSON)
        let unnamed = try ivctl(["regions"], server: custom)
        #expect(unnamed.status == 0, "\(unnamed.errors)")
        let named = try ivctl(["regions", "--region", "odd"], server: custom)
        #expect(named.output == unnamed.output)
        #expect(named.status == 0)
        #expect(named.output.split(separator: "\n").count == 7, "title, header, 4 regions, note:\n\(named.output)")
        #expect(named.output.contains("3  managed  0x6000"))
        #expect(custom.stop() == 0)
    }

    @Test("dump prints hexdump -C lines with region-relative offsets and squeezes repeats")
    func dump() throws {
        let server = try ServerProcess()
        let connection = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        try connection.memory.write(Array("ABCDEFGHIJKLMNOPQRS".utf8), offset: 24)
        let part = try ivctl(["dump", "e2e_primary", "--offset", "24", "--length", "0x14"], server: server)
        #expect(part.status == 0)
        #expect(part.output == """
            00000018  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|
            00000028  51 52 53 00                                       |QRS.|
            0000002c

            """)
        let whole = try ivctl(["dump", "e2e_primary"], server: server)
        #expect(whole.output == """
            00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
            00000010  00 00 00 00 00 00 00 00  41 42 43 44 45 46 47 48  |........ABCDEFGH|
            00000020  49 4a 4b 4c 4d 4e 4f 50  51 52 53 00 00 00 00 00  |IJKLMNOPQRS.....|
            00000030  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
            *
            00004000

            """)
        let outside = try ivctl(["dump", "e2e_primary", "--offset", "0x4000", "--length", "1"], server: server)
        #expect(outside.status == 64)
        #expect(outside.errors == "ivctl: bytes 16384..<16385 are outside region 'e2e_primary' (16384 bytes)\n")
        // the 400 MiB region: dumping it reads holes without filling them
        let big = try ivctl(["dump", "gralloc_memory", "--offset", "0x100000", "--length", "0x100000"], server: server)
        #expect(big.output == "00100000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n*\n00200000\n")
        var info = stat()
        stat(server.sharedMemoryPath, &info)
        #expect(info.st_blocks * 512 <= 64 * 1024, "the shared memory stays sparse: \(info.st_blocks * 512) bytes allocated")
        #expect(server.stop() == 0)
    }

    @Test("write puts text, hex or standard input at an offset of a region, bounds-checked like dump")
    func write() throws {
        let server = try ServerProcess()
        let connection = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        let text = try ivctl(["write", "e2e_primary", "--offset", "0x18", "hello"], server: server)
        #expect(text.status == 0 && text.output == "wrote 5 bytes at offset 24 of region 'e2e_primary'\n", "\(text)")
        #expect(try connection.memory.read(offset: 24, count: 5) == Array("hello".utf8))
        let hex = try ivctl(["write", "e2e_primary", "--offset", "40", "--hex", "de ad be ef"], server: server)
        #expect(hex.status == 0)
        #expect(try connection.memory.read(offset: 40, count: 4) == [0xde, 0xad, 0xbe, 0xef])
        let piped = try runTool(["/bin/sh", "-c", "printf 'from\\000stdin' | \"$0\" write e2e_primary --offset 64 --client-sock \"$1\"",
                                 ivctlBinary, server.clientSocketPath])
        #expect(piped.status == 0, "\(piped)")
        #expect(try connection.memory.read(offset: 64, count: 10) == Array("from\0stdin".utf8))
        let outside = try ivctl(["write", "e2e_primary", "--offset", "0x3ffe", "abc"], server: server)
        #expect(outside.status == 64)
        #expect(outside.errors == "ivctl: bytes 16382..<16385 are outside region 'e2e_primary' (16384 bytes)\n")
        let badHex = try ivctl(["write", "e2e_primary", "--hex", "xyz"], server: server)
        #expect(badHex.status == 64 && badHex.errors.contains("--hex wants pairs of hex digits"), "\(badHex)")
        let unknown = try ivctl(["write", "no_such_region", "x"], server: server)
        #expect(unknown.status == 3)
        #expect(server.stop() == 0)
    }

    @Test("signal interrupts the guest on the region's vector, or queues an offset first")
    func signal() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let plain = try ivctl(["signal", "e2e_primary"], server: server)
        #expect(plain.status == 0)
        #expect(plain.output == "interrupted the guest on region e2e_primary (vector 4)\n")
        #expect(try waitForEventFD(vm.ownVectors[4], seconds: 5) == 1)
        let connection = try RegionConnection.open(region: "e2e_primary", socket: server.clientSocketPath)
        #expect(try connection.memory.exchange(0, offset: 20) == 1, "the host_to_guest word was raised; the guest takes the interrupt")
        let queued = try ivctl(["signal", "e2e_primary", "--offset", "24", "--round-trip"], server: server)
        #expect(queued.output == "signalled offset 24 (round trip) to the guest on region e2e_primary (vector 4)\n")
        #expect(try connection.memory.load(offset: 12) == 24 | 1, "host_to_guest slot 0")
        #expect(try waitForEventFD(vm.ownVectors[4], seconds: 5) == 1)
        let usage = try ivctl(["signal", "e2e_primary", "--round-trip"], server: server)
        #expect(usage.status == 64)
        #expect(usage.errors.contains("--round-trip needs --offset"))
        let misaligned = try ivctl(["signal", "e2e_primary", "--offset", "26"], server: server)
        #expect(misaligned.status == 64)
        #expect(misaligned.errors.contains("signal offset 26 is not a non-zero, 4-byte aligned word"))
        #expect(server.stop() == 0)
    }

    @Test("wait prints counts, exits 2 on timeout")
    func wait() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let started = monotonicSeconds()
        let timedOut = try ivctl(["wait", "e2e_primary", "--timeout", "0.3"], server: server)
        #expect(timedOut.status == 2)
        #expect(timedOut.errors == "ivctl: region 'e2e_primary': timed out after 0 of 1 interrupts\n")
        #expect(monotonicSeconds() - started >= 0.3)
        try vm.ring(4, times: 3)
        let counted = try ivctl(["wait", "e2e_primary", "--count", "3", "--timeout", "10"], server: server)
        #expect(counted.status == 0)
        #expect(counted.output == "e2e_primary: 3 interrupts\n")
        try vm.ring(4)
        let partly = try ivctl(["wait", "e2e_primary", "--count", "2", "--timeout", "0.2"], server: server)
        #expect(partly.status == 2)
        #expect(partly.output == "e2e_primary: 1 interrupt\n")
        #expect(partly.errors == "ivctl: region 'e2e_primary': timed out after 1 of 2 interrupts\n")
        #expect(server.stop() == 0)
    }

    @Test("watch prints a line per ring of any region and leaves the count to the region's client")
    func watch() throws {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        try vm.ring(0)  // pending before the watch: not reported
        let output = "/tmp/ivs-watch-\(getpid()).out"
        defer { unlink(output) }
        let pid = try spawn([ivctlBinary, "watch", "--client-sock", server.clientSocketPath], logPath: output, defaultSignals: true)
        var reaped = false
        defer { if !reaped { kill(pid, SIGKILL); _ = waitForExit(pid, seconds: 5) } }
        #expect(eventually { readText(output).contains("watching 8 regions at \(server.clientSocketPath): hwcomposer, ") })
        try vm.ring(5)
        #expect(eventually { readText(output).contains("e2e_secondary: interrupted\n") })
        try vm.ring(7)
        #expect(eventually { readText(output).contains("e2e_managed: interrupted\n") })
        let secondary = try RegionConnection.open(region: "e2e_secondary", socket: server.clientSocketPath)
        #expect(try secondary.waitForGuest(timeout: .seconds(1)) == 1, "watch did not take the interrupt")
        #expect(!readText(output).contains("hwcomposer: interrupted"), "a ring from before the watch is not shown")
        kill(pid, SIGINT)
        let status = waitForExit(pid, seconds: 5)
        reaped = status != nil
        #expect(status == 128 + SIGINT, "Ctrl-C ends the watch")
        #expect(server.stop() == 0)
    }

    @Test("errors: unknown region lists the names (3), missing socket names it (1), exit codes in --help")
    func errors() throws {
        let server = try ServerProcess()
        let unknown = try ivctl(["dump", "nosuch"], server: server)
        #expect(unknown.status == 3)
        #expect(unknown.errors == "ivctl: region 'nosuch' at \(server.clientSocketPath): no such region; the layout has: "
            + plan.regions.map(\.name).joined(separator: ", ") + "\n")
        #expect(server.stop() == 0)
        let missing = try ivctl(["wait", "hwcomposer", "--client-sock", "/nonexistent/client.sock"])
        #expect(missing.status == 1)
        #expect(missing.errors == "ivctl: /nonexistent/client.sock: no such socket; is ivserver running, and is this its --client-sock?\n")
        let help = try ivctl(["--help"])
        #expect(help.status == 0)
        for line in ["0   success", "1   the server could not be reached", "2   wait, peer wait: the timeout passed", "3   no region of that name", "64  bad command line"] {
            #expect(help.output.contains(line), "--help documents exit code line '\(line)'")
        }
        // An offset's default is shown as it is typed, not as a Swift value.
        for command in [["dump"], ["write"], ["peer", "dump"], ["peer", "write"]] {
            let usage = try ivctl(["help"] + command)
            #expect(usage.status == 0)
            let words = usage.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(words.contains("(default: 0)") && !words.contains("ByteValue"), "\(command): \(usage.output)")
        }
    }
}
