import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// The shares divide scarce room; they are no quota on a client that is
/// alone. Default options throughout unless a test says otherwise.
@Suite("Fairness that never turns a lone client away", .serialized)
struct FairnessTests {
    /// The rest of a HALD handshake on a connection that was greeted (or
    /// is about to be): reads the version, asks for `region`, reads the grant.
    func finishHandshake(_ socket: OwnedFD, region: String = "e2e_primary") throws -> Bool {
        let greeting = try receiveExactly(socket, count: 4, maximumFDs: 0)
        guard greeting.bytes.count == 4 else { return false }
        try sendAll(socket, request(region))
        let grant = try receiveExactly(socket, count: 16, maximumFDs: 4)
        return grant.bytes.count == 8 && grant.fds.count == 3
    }

    @Test("one process opens 1,000 connections at once, then does every handshake in turn: all 1,000 are served")
    func burstFromOneProcess() throws {
        let server = try ServerProcess()
        let start = monotonicSeconds()
        let sockets = try (0..<1000).map { _ in try connectClient(server.clientSocketPath) }
        var served = 0
        for socket in sockets where try finishHandshake(socket) { served += 1 }
        print("1,000 connections opened at once, then served one after another: \(Int((monotonicSeconds() - start) * 1000)) ms")
        #expect(served == 1000)
        #expect(!server.log.contains("over its share"), "a process alone is never over a share: \(server.log)")
        #expect(server.stop() == 0)
    }

    @Test("the same burst with 16 threads doing the handshakes at once: all 1,000 are served")
    func burstWithThreads() throws {
        let server = try ServerProcess()
        let start = monotonicSeconds()
        let sockets = try (0..<1000).map { _ in try connectClient(server.clientSocketPath) }
        let served = Shared(0)
        let failures = Shared<[String]>([])
        let shared = sockets
        let threads = (0..<16).map { index in
            TestThread {
                for socket in stride(from: index, to: shared.count, by: 16).map({ shared[$0] }) {
                    do {
                        if try finishHandshake(socket) { served.update { $0 += 1 } }
                    } catch {
                        failures.update { $0.append("\(error)") }
                    }
                }
            }
        }
        threads.forEach { $0.join() }
        print("1,000 connections opened at once, served by 16 threads: \(Int((monotonicSeconds() - start) * 1000)) ms")
        #expect(served.value == 1000, "failures: \(failures.value.prefix(5))")
        #expect(server.stop() == 0)
    }

    @Test("200 silent connections, then one real handshake from the same process: served at once")
    func silentThenReal() throws {
        let server = try ServerProcess()
        let silent = try (0..<200).map { _ in try connectClient(server.clientSocketPath) }
        // Each silent one is greeted: none waits for a share.
        for socket in silent { #expect(try receiveExactly(socket, count: 4, maximumFDs: 0).bytes.count == 4) }
        let start = monotonicSeconds()
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
        print("a handshake beside 200 silent connections of its own process: \(Int((monotonicSeconds() - start) * 1000)) ms")
        #expect(silent.allSatisfy { !UnixSocket.peerHasHungUp($0) }, "served before the silent ones' deadline")
        #expect(server.stop() == 0)
    }

    @Test("a lone burst beyond --max-pending: the rest wait and are greeted in turn as room opens, all served")
    func burstBeyondTheTotal() throws {
        let server = try ServerProcess(arguments: ["--max-pending", "100", "--log-level", "info"])
        let sockets = try (0..<300).map { _ in try connectClient(server.clientSocketPath) }
        var served = 0
        for socket in sockets where try finishHandshake(socket) { served += 1 }
        #expect(served == 300)
        // The summary counts what happened since the process went over its
        // share: how far the server had accepted when the first handshakes
        // finished (a connect returns once queued, so room can open before
        // the last ones are accepted) decides how many were served before
        // that, and how many waited (200 at most).
        let marker = "host client process pid \(getpid()) has no pending or waiting connection now; meanwhile "
        #expect(server.waitForLog(containing: marker), "\(server.log)")
        let log = server.log
        let summary = log.split(separator: "\n").first { $0.contains(marker) }.map { $0.split(separator: marker).last ?? "" } ?? ""
        // "S of its connections were served, W waited for room, C were closed or refused"
        let counts = summary.split { !$0.isNumber }.compactMap { Int($0) }
        #expect(counts.count == 3 && summary.hasSuffix(" were closed or refused"), "\(log)")
        if counts.count == 3 {
            let (servedSince, waited, closed) = (counts[0], counts[1], counts[2])
            #expect((1...200).contains(waited), "\(log)")
            #expect((waited...300).contains(servedSince), "every one that waited was served: \(log)")
            #expect(closed == 0, "\(log)")
        }
        #expect(server.stop() == 0)
    }
}
