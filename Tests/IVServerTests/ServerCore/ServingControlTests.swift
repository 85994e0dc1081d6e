import Glibc
import LinuxSystem
import Synchronization
import Testing
@testable import ServerCore

/// The lifecycle both servers share, driven directly: no server, no socket.
@Suite("Serving control: the lifecycle, the stop switch and the loop")
struct ServingControlTests {
    @Test("start, serve, a stop asked from another thread while serving, close: each state in turn, the connections closed once")
    func stopFromAnotherThread() throws {
        let control = ServingControl(of: "test")
        #expect(control.state == .created)
        control.started()
        #expect(control.state == .started)
        let closings = Shared(0)
        _ = try control.beginServing(events: RecordedEvents(), closeConnections: { closings.update { $0 += 1 } },
                                     stopRequested: { control.stop() })
        let stopper = Shared<TestThread?>(nil)
        try control.run(whenReady: { _ in }, ready: {
            // Asked from another thread once the loop is about to run.
            stopper.update { $0 = TestThread { control.requestStop() } }
        })
        stopper.value?.join()
        #expect(control.state == .stopped, "run returned because the stop switch was thrown")
        #expect(closings.value == 1)
        #expect(control.beginClosing())
        control.closed()
        #expect(control.state == .closed)
        #expect(!control.beginClosing(), "closing twice does nothing")
        #expect(closings.value == 1, "the connections are closed once")
    }

    @Test("a stop asked before the loop exists is kept: the server stops as soon as it serves")
    func earlyStop() throws {
        let control = ServingControl(of: "test")
        control.started()
        control.requestStop()
        let readied = Shared(false)
        _ = try control.beginServing(events: RecordedEvents(), closeConnections: {}, stopRequested: { control.stop() })
        try control.run(whenReady: { _ in }, ready: { readied.update { $0 = true } })
        #expect(readied.value, "ready still runs (and says so) before the kept stop")
        #expect(control.state == .stopped)
        #expect(control.beginClosing())
        control.closed()
    }

    @Test("a start that failed, or a server never served, closes straight from where it is")
    func closeWithoutServing() {
        let never = ServingControl(of: "test")
        #expect(never.beginClosing())
        never.closed()
        #expect(never.state == .closed)
        let started = ServingControl(of: "test")
        started.started()
        #expect(!started.stop(), "stop does nothing before serving")
        #expect(started.beginClosing())
        started.closed()
        #expect(started.state == .closed)
    }

    @Test("whenReady's failure ends run before ready, and close tears the loop down")
    func whenReadyFails() throws {
        struct Failed: Error {}
        let control = ServingControl(of: "test")
        control.started()
        let closings = Shared(0)
        _ = try control.beginServing(events: RecordedEvents(), closeConnections: { closings.update { $0 += 1 } }, stopRequested: {})
        #expect(throws: Failed.self) { try control.run(whenReady: { _ in throw Failed() }, ready: { Issue.record("ready after a failure") }) }
        #expect(control.state == .started)
        #expect(control.beginClosing())
        control.closed()
        #expect(closings.value == 1, "the connections closed by the close")
    }
}
