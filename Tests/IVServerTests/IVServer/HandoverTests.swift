import Glibc
import LinuxSystem
import Synchronization
import Testing
@testable import IVServer
@testable import ServerCore

@Suite("The hand-over: what goes to the next process and what is taken back")
struct HandoverTests {
    let plan = LayoutLoader.loadDefault()

    func configuration(_ directory: TemporaryDirectory) -> VSoCServerConfiguration { inProcessConfiguration(directory) }

    /// A first server that stores its fds, stopped: the store holds what a
    /// next process gets, and the files stay.
    func storedByAFirstServer(_ directory: TemporaryDirectory) throws -> RecordingStore {
        let store = RecordingStore()
        let first = InProcess<VSoCServer> { _, events in
            VSoCServer(configuration: configuration(directory), events: events, handover: Handover.Source(handed: [:], store: store))
        }
        #expect(first.waitUntilReady())
        #expect(try #require(first.finish()).get() == ())
        return store
    }

    func receive(_ handed: [String: [OwnedFD]], _ directory: TemporaryDirectory) -> Result<Handover.Received?, HandoverError> {
        Result { () throws(HandoverError) in try Handover.receive(from: handed, plan: plan, sharedMemoryPath: directory.path + "/shm") }
    }

    func error(_ result: Result<Handover.Received?, HandoverError>) -> HandoverError? {
        if case let .failure(error) = result { return error }
        return nil
    }

    func eventFD() throws -> OwnedFD { try EventFD.create() }

    func regularFile(_ directory: TemporaryDirectory, size: Int) -> OwnedFD {
        let fd = open(directory.path + "/other", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        precondition(fd >= 0 && ftruncate(fd, off_t(size)) == 0)
        return OwnedFD(taking: fd)
    }

    @Test("a first server stores the memory, both eventfds of every region and both listeners; stopped, it leaves them")
    func firstStartStores() throws {
        let directory = TemporaryDirectory()
        let store = try storedByAFirstServer(directory)
        #expect(Set(store.names.map(FakeServiceManager.kind)) == storedNames(of: plan, listeners: true))
        #expect(Set(directory.entries()).isSuperset(of: ["shm", "qemu.sock", "client.sock"]), "a stop that hands over removes nothing")
    }

    @Test("the next server takes back what was stored: the same memory, no file made anew, nothing stored again")
    func nextServerTakesOver() throws {
        let directory = TemporaryDirectory()
        let store = try storedByAFirstServer(directory)
        let before = try #require(try FileIdentity.at(directory.path + "/shm"))
        let asked = store.requests.count
        let next = InProcess<VSoCServer> { _, events in
            VSoCServer(configuration: configuration(directory), events: events, handover: Handover.Source(handed: store.handed(), store: store))
        }
        #expect(next.waitUntilReady())
        #expect(next.events.contains("resumed what the previous server process handed over"))
        #expect(try haldHandshake(directory.path + "/client.sock", region: "hwcomposer").fds.count == 3)
        #expect(next.server.handsOverFiles)
        #expect(try #require(next.finish()).get() == ())
        #expect(try FileIdentity.at(directory.path + "/shm") == before, "the same memory file")
        #expect(store.requests.count == asked, "what the store holds already is not stored again: \(store.requests[asked...])")
    }

    @Test("without a store nothing outlives the server: files made are removed at the end")
    func noStoreRemovesFiles() throws {
        let directory = TemporaryDirectory()
        let server = InProcess<VSoCServer> { _, events in
            VSoCServer(configuration: configuration(directory), events: events, handover: .none)
        }
        #expect(server.waitUntilReady())
        #expect(!server.server.handsOverFiles)
        #expect(try #require(server.finish()).get() == ())
        #expect(directory.entries() == [])
    }

    @Test("a hand-over the server cannot serve: start fails with its reason and changes nothing at the paths")
    func refusedHandoverChangesNothing() throws {
        let directory = TemporaryDirectory()
        let store = try storedByAFirstServer(directory)
        var handed = store.handed()
        handed[Handover.hostToGuest(3)] = nil
        let entries = directory.entries().sorted()
        let memory = try #require(try FileIdentity.at(directory.path + "/shm"))
        let next = InProcess<VSoCServer> { _, events in
            VSoCServer(configuration: configuration(directory), events: events, handover: Handover.Source(handed: handed, store: store))
        }
        let result = try #require(next.finish(stopping: false))
        guard case let .failure(failure) = result, let refused = failure as? HandoverError else {
            Issue.record("start did not fail with a HandoverError: \(result)")
            return
        }
        #expect(refused == .missingEventFDs(region: 3, regionCount: plan.regionCount))
        #expect(directory.entries().sorted() == entries)
        #expect(try FileIdentity.at(directory.path + "/shm") == memory)
    }

    @Test("nothing handed: a first start")
    func nothingHanded() throws {
        let directory = TemporaryDirectory()
        guard case .success(nil) = receive([:], directory) else {
            Issue.record("an empty hand-over was not a first start")
            return
        }
    }

    @Test("everything handed: the memory, every region's channels, both listeners and the VM")
    func everythingHanded() throws {
        let directory = TemporaryDirectory()
        var handed = try storedByAFirstServer(directory).handed()
        handed[Handover.vm] = [try eventFD()]
        let received = try #require(try receive(handed, directory).get())
        #expect(received.channels.count == plan.regionCount)
        #expect(received.listenerCount == 2)
        #expect(received.vm != nil)
        #expect(received.qemuListener?.file != nil, "the listener's name carries its file's identity")
    }

    @Test("each reason a hand-over is refused, one case each")
    func everyRefusal() throws {
        let directory = TemporaryDirectory()
        let good = try storedByAFirstServer(directory)
        let regions = plan.regionCount
        func variant(_ change: (inout [String: [OwnedFD]]) throws -> Void) rethrows -> HandoverError? {
            var handed = good.handed()
            try change(&handed)
            return error(receive(handed, directory))
        }
        #expect(try variant { $0[Handover.sharedMemory]!.append(try eventFD()) } == .duplicate(name: Handover.sharedMemory, count: 2))
        #expect(variant { $0[Handover.sharedMemory] = nil } == .noSharedMemory(handed: good.handed().keys.filter { $0 != Handover.sharedMemory }.sorted()))
        #expect(try variant { $0[Handover.sharedMemory] = [try eventFD()] } == .sharedMemoryNotARegularFile)
        #expect(variant { $0[Handover.sharedMemory] = [regularFile(directory, size: 4096)] }
            == .sharedMemorySize(actual: 4096, expected: UInt64(plan.size)))
        #expect(variant { $0[Handover.sharedMemory] = [regularFile(directory, size: Int(plan.size))] } == .sharedMemoryHeader)
        #expect(variant { $0[Handover.guestToHost(0)] = nil } == .missingEventFDs(region: 0, regionCount: regions))
        #expect(variant { $0[Handover.hostToGuest(regions - 1)] = nil } == .missingEventFDs(region: regions - 1, regionCount: regions))
        #expect(variant { $0[Handover.hostToGuest(2)] = [regularFile(directory, size: 0)] } == .notAnEventFD(name: Handover.hostToGuest(2)))
        #expect(try variant { $0[Handover.guestToHost(regions)] = [try eventFD()] } == .moreRegions(regionCount: regions))
        #expect(try variant { $0[Handover.hostToGuest(regions)] = [try eventFD()] } == .moreRegions(regionCount: regions))
        #expect(try variant { $0[Handover.vm] = [try eventFD(), try eventFD()] } == .duplicate(name: Handover.vm, count: 2))
        let qemuListeners = (good.handed().keys.filter { Handover.parseListener($0)?.base == Handover.qemuListener } + [Handover.qemuListener]).sorted()
        #expect(qemuListeners.count == 2)
        #expect(try variant { $0[Handover.qemuListener] = [try eventFD()] }
            == .duplicateListener(base: Handover.qemuListener, names: qemuListeners))
        // Every message says what is wrong and that nothing was changed.
        let message = HandoverError.missingEventFDs(region: 3, regionCount: regions).description
        #expect(message.contains("region 3's eventfds were not handed back") && message.hasSuffix("nothing was changed"))
    }

    @Test("what the store is told once serving, after a first start and after a hand-over")
    func storeChanges() {
        let outgoing = ["ivs-shm", "ivs-g2h-0", "ivs-h2g-0", "ivs-qemu-listen@1.2", "ivs-client-listen@1.3"]
        let made = [Handover.ListenerEntry(name: "ivs-qemu-listen@1.2", handedName: nil, activated: false),
                    Handover.ListenerEntry(name: "ivs-client-listen@1.3", handedName: nil, activated: false)]
        // A first start: everything.
        #expect(Handover.storeChanges(afterHandover: false, listeners: made, replaced: [], outgoing: outgoing) == ([], outgoing))
        // After a hand-over that brought both listeners back as they were: nothing.
        let same = made.map { Handover.ListenerEntry(name: $0.name, handedName: $0.name, activated: false) }
        #expect(Handover.storeChanges(afterHandover: true, listeners: same, replaced: [], outgoing: outgoing) == ([], []))
        // A listener made anew (its file was gone): it replaces the old one.
        var renewed = same
        renewed[1] = Handover.ListenerEntry(name: "ivs-client-listen@1.9", handedName: "ivs-client-listen@1.3", activated: false)
        let renewedOut = outgoing.dropLast() + ["ivs-client-listen@1.9"]
        #expect(Handover.storeChanges(afterHandover: true, listeners: renewed, replaced: [], outgoing: Array(renewedOut))
            == (["ivs-client-listen@1.3"], ["ivs-client-listen@1.9"]))
        // A socket unit's listener never goes in; the stored one it replaces leaves.
        let unit = [made[0], Handover.ListenerEntry(name: "unit", handedName: nil, activated: true)]
        let unitOut = Array(outgoing.dropLast()) + ["unit"]
        #expect(Handover.storeChanges(afterHandover: false, listeners: unit, replaced: ["ivs-client-listen@1.3"], outgoing: unitOut)
            == (["ivs-client-listen@1.3"], Array(outgoing.dropLast())))
    }

    @Test("SIGUSR2's variables: written for the new image, read back by it alone, an earlier hand-over's replaced")
    func reexecVariables() {
        let current = ["PATH=/bin", "IVSERVER_HANDOVER_FDS=old=9", "IVSERVER_HANDOVER_CHILD=7", "HOME=/root"]
        let environment = Reexec.environment(current, pid: 42, handing: [("ivs-shm", 5), ("ivs-g2h-0", 6)], child: 77)
        #expect(environment == ["PATH=/bin", "HOME=/root", "IVSERVER_HANDOVER_PID=42", "IVSERVER_HANDOVER_FDS=ivs-shm=5:ivs-g2h-0=6",
                                "IVSERVER_HANDOVER_CHILD=77"])
        func value(_ name: String) -> String? {
            environment.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) }
        }
        let read = Reexec.parse(ownPID: 42, pid: value("IVSERVER_HANDOVER_PID"), fds: value("IVSERVER_HANDOVER_FDS"),
                                child: value("IVSERVER_HANDOVER_CHILD"))
        #expect(read.fds.map(\.name) == ["ivs-shm", "ivs-g2h-0"] && read.fds.map(\.fd) == [5, 6] && read.child == 77)
        let other = Reexec.parse(ownPID: 43, pid: "42", fds: "ivs-shm=5", child: "77")
        #expect(other.fds.isEmpty && other.child == nil, "meant for another process")
        let odd = Reexec.parse(ownPID: 42, pid: "42", fds: "a=1:b=x:c=7:=8:d", child: "0")
        #expect(odd.fds.map(\.name) == ["c"] && odd.child == nil, "standard streams, non-numbers, nameless items and a child 0 are no hand-over")
    }
}
