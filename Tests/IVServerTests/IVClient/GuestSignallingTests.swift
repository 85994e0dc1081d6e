import LinuxSystem
@testable import ServerCore
import Dispatch
import Glibc
import Testing
@testable import IVClient
@testable import IVServer
import WireFormat

/// IVClient and ivctl against a guest that signals exactly as the original
/// vSoC code does (`EmulatedGuest`, from the spec), over a real ivserver.
@Suite("Host signalling against an emulated guest", .serialized)
struct GuestSignallingTests {
    let plan = LayoutLoader.loadDefault()
    var layout: LayoutHeader { LayoutEncoder.header(plan) }

    struct Setup {
        let server: ServerProcess
        let vm: FakeVM
        let host: RegionConnection
        let guest: EmulatedGuest
    }

    func setUp(_ region: String) throws -> Setup {
        let server = try ServerProcess()
        let vm = try FakeVM(server: server, regionCount: plan.regionCount)
        let host = try RegionConnection.open(region: region, socket: server.clientSocketPath)
        let guest = try EmulatedGuest(vm: vm, region: host.regionIndex, layout: layout)
        return Setup(server: server, vm: vm, host: host, guest: guest)
    }

    @Test("interruptGuest raises interrupt_signalled, rings only when it was 0, and the guest takes it")
    func interruptGuest() throws {
        let s = try setUp("e2e_primary")
        #expect(try s.guest.waitForInterrupt(seconds: 0) == false, "nothing pending at start")
        #expect(try s.host.interruptGuest() == true, "the first one rings")
        #expect(try s.guest.hostInterruptWord == 1)
        #expect(try s.host.interruptGuest() == false, "the second merges: the guest has not taken the first")
        #expect(try EventFD.drain(s.vm.ownVectors[s.host.regionIndex]) == 1, "the eventfd was written once")
        #expect(try s.guest.waitForInterrupt(seconds: 0) == true, "the guest takes it through the word")
        #expect(try s.guest.hostInterruptWord == 0)
        #expect(try s.host.interruptGuest() == true, "once taken, the next one rings again")
        #expect(try s.guest.waitForInterrupt(seconds: 5) == true)
        #expect(s.server.stop() == 0)
    }

    @Test("ivctl signal interrupts the guest through the word, and says when it merged")
    func ivctlSignal() throws {
        let s = try setUp("e2e_secondary")
        var result = try ivctl(["signal", "e2e_secondary"], server: s.server)
        #expect(result.status == 0)
        #expect(result.output == "interrupted the guest on region e2e_secondary (vector 5)\n")
        result = try ivctl(["signal", "e2e_secondary"], server: s.server)
        #expect(result.status == 0)
        #expect(result.output == "the guest has not taken its last interrupt on region e2e_secondary (vector 5) yet: this one merged into it\n")
        #expect(try s.guest.waitForInterrupt(seconds: 5) == true)
        #expect(try ivctl(["signal", "e2e_secondary"], server: s.server).output.hasPrefix("interrupted"))
        #expect(s.server.stop() == 0)
    }

    @Test("waitForGuest takes the guest's word, so its next interrupt rings again; a bare doorbell counts too")
    func waitForGuest() throws {
        let s = try setUp("hwcomposer")
        #expect(try s.guest.interruptHost() == true)
        #expect(try s.host.waitForGuest(timeout: .seconds(5)) == 1)
        #expect(try s.guest.guestInterruptWord == 0, "taking the interrupt cleared the word")
        #expect(try s.guest.interruptHost() == true, "so the guest's second interrupt rings")
        #expect(try s.host.waitForGuest(timeout: .seconds(5)) == 1)
        // the word set without a ring (its ring not arrived yet): taken at once
        try s.guest.memory.store(1, offset: Int(s.guest.descriptor.guestToHost.signalledOffset))
        #expect(try s.host.waitForGuest(timeout: .zero) == 1)
        #expect(try s.guest.guestInterruptWord == 0)
        // a guest that only writes the Doorbell, without the tables
        try s.vm.ring(s.host.regionIndex, times: 2)
        #expect(try s.host.waitForGuest(timeout: .seconds(5)) == 2)
        #expect(try s.host.waitForGuest(timeout: .zero) == nil, "nothing left")
        #expect(s.server.stop() == 0)
    }

    @Test("ivctl wait --count 2 sees two interrupts of a guest that uses the word")
    func ivctlWaitTwice() throws {
        let s = try setUp("fb_broadcast")
        #expect(try s.guest.interruptHost() == true)
        let result = Shared<(status: Int32, output: String, errors: String)?>(nil)
        let socket = s.server.clientSocketPath
        let tool = TestThread {
            do {
                let run = try ivctl(["wait", "fb_broadcast", "--count", "2", "--timeout", "20", "--client-sock", socket])
                result.update { $0 = run }
            } catch {
                result.update { $0 = (status: -1, output: "", errors: "ivctl could not be run: \(error)") }
            }
        }
        #expect(try eventually(seconds: 20) { try s.guest.guestInterruptWord == 0 }, "ivctl took the first interrupt")
        #expect(try s.guest.interruptHost() == true, "the second one rings")
        tool.join()
        #expect(result.value?.status == 0, "\(result.value?.errors ?? "ivctl did not run")")
        #expect(result.value?.output == "fb_broadcast: 1 interrupt\nfb_broadcast: 1 interrupt\n")
        #expect(s.server.stop() == 0)
    }

    @Test("processSignals never drops an echo: a full host_to_guest table is retried until the guest drains it")
    func echoWaitsForFullTable() throws {
        let s = try setUp("e2e_manager")   // two slots each way
        try s.host.sendSignal(offset: 40)
        try s.host.sendSignal(offset: 44)  // host_to_guest is full now
        try s.guest.sendSignal(offset: 48, roundTrip: true)
        try s.guest.sendSignal(offset: 52, roundTrip: true)
        var seen: [UInt32] = []
        do throws(IVClientError) {
            try s.host.processSignals(echoTimeout: .zero) { seen.append($0) }
            Issue.record("a full table with no time to wait must be reported")
        } catch {
            #expect(error.kind == .signalTableFull(offset: 48))
        }
        #expect(seen == [48, 52], "every entry was handled")
        #expect(s.host.pendingEchoCount == 2, "both echoes are kept")
        // the guest drains its table; the host waits for room (nil: as long as it takes)
        let guestSaw = Shared<[UInt32]>([])
        let guestError = Shared<String?>(nil)
        let guest = s.guest
        let guestSide = TestThread {
            let deadline = monotonicSeconds() + 10
            while guestSaw.value.count < 4 && monotonicSeconds() < deadline {
                do {
                    guard try guest.waitForInterrupt(seconds: 0.1) else { continue }
                    try guest.processSignals { offset in guestSaw.update { $0.append(offset) } }
                } catch {
                    guestError.update { $0 = "\(error)" }
                    return
                }
            }
        }
        #expect(try s.host.processSignals { _ in Issue.record("nothing new was queued") } == 0)
        #expect(s.host.pendingEchoCount == 0)
        guestSide.join()
        #expect(guestSaw.value.sorted() == [40, 44, 48, 52], "the guest got the host's signals and both echoes\(guestError.value.map { "; the guest failed: \($0)" } ?? "")")
        #expect(s.server.stop() == 0)
    }

    /// 10,000 round trips each way between the guest and a host
    /// `RegionWorker`, two senders per side, each waiting for its echo
    /// before it signals again (as `WaitForSignal` does). Each echo that is
    /// dropped leaves a sender waiting: the test then fails on its timeout.
    func roundTrips(region: String, words: (guest: [UInt32], host: [UInt32]), total: Int = 10_000) throws {
        let s = try setUp(region)
        let host = s.host, guest = s.guest
        let data = s.host.descriptor.dataOffset
        let guestWords = words.guest.map { data + $0 }, hostWords = words.host.map { data + $0 }
        let guestEchoes = guestWords.map { _ in DispatchSemaphore(value: 0) }
        let hostEchoes = hostWords.map { _ in DispatchSemaphore(value: 0) }
        let worker = try s.host.startWorker { offset in
            if let index = hostWords.firstIndex(of: offset) { hostEchoes[index].signal() }
        }
        let stopping = Shared(false)
        let failures = Shared<[String]>([])
        let guestReceiver = TestThread {
            while !stopping.value {
                do {
                    guard try guest.waitForInterrupt(seconds: 0.1) else { continue }
                    try guest.processSignals { offset in
                        if let index = guestWords.firstIndex(of: offset) { guestEchoes[index].signal() }
                    }
                } catch {
                    failures.update { $0.append("guest receiver: \(error)") }
                    return
                }
            }
        }
        let perSender = total / guestWords.count
        let completed = Shared<[String: Int]>([:])
        var senders: [TestThread] = []
        for (index, word) in guestWords.enumerated() {
            senders.append(TestThread {
                for round in 0..<perSender {
                    do {
                        try guest.sendSignal(offset: word, roundTrip: true)
                    } catch {
                        failures.update { $0.append("guest sender \(word): \(error)") }
                        break
                    }
                    guard guestEchoes[index].wait(timeout: .now() + .seconds(10)) == .success else { break }
                    completed.update { $0["guest \(word)"] = round + 1 }
                }
            })
        }
        for (index, word) in hostWords.enumerated() {
            senders.append(TestThread {
                for round in 0..<perSender {
                    while true {
                        do throws(IVClientError) {
                            try host.sendSignal(offset: word, roundTrip: true)
                            break
                        } catch where error.kind.isSignalTableFull {
                            sched_yield()  // the guest was interrupted and will drain the table
                        } catch {
                            failures.update { $0.append("host sender \(word): \(error)") }
                            return
                        }
                    }
                    guard hostEchoes[index].wait(timeout: .now() + .seconds(10)) == .success else { break }
                    completed.update { $0["host \(word)"] = round + 1 }
                }
            })
        }
        for sender in senders { sender.join() }
        stopping.update { $0 = true }
        guestReceiver.join()
        try worker.stop()
        let expected = Dictionary(uniqueKeysWithValues: guestWords.map { ("guest \($0)", perSender) } + hostWords.map { ("host \($0)", perSender) })
        #expect(completed.value == expected, "every round trip came back, both ways\(failures.value.isEmpty ? "" : "; " + failures.value.joined(separator: "; "))")
        #expect(s.host.pendingEchoCount == 0)
        #expect(s.server.stop() == 0)
    }

    @Test("10,000 round trips each way through one-slot tables (gralloc_memory)")
    func roundTripsOneSlot() throws {
        try roundTrips(region: "gralloc_memory", words: (guest: [64, 128], host: [256, 512]))
    }

    @Test("10,000 round trips each way through four-slot tables, words colliding on one slot (hwcomposer)")
    func roundTripsFourSlots() throws {
        try roundTrips(region: "hwcomposer", words: (guest: [64, 80], host: [128, 144]))
    }
}
