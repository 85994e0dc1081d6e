import LinuxSystem
@testable import ServerCore
@testable import MultiPeer
import WireFormat
import Glibc
import Testing
@testable import IVServer

/// The multi-peer mode over its socket, with raw clients (the real binary).
@Suite(.serialized) struct MultiPeerServerTests {
    @Test func joinsAndLeavesAreAnnouncedInOrder() throws {
        let server = try ServerProcess(multiPeer: ["-n", "2", "-l", "1M"])
        let a = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 0)
        #expect(a.id == 0)
        #expect(sameFile(try #require(a.sharedMemory), server.sharedMemoryObjectPath))
        var info = stat()
        fstat(try #require(a.sharedMemory).rawValue, &info)
        #expect(info.st_size == 1 << 20)

        let b = try RawPeer(connectingTo: server.peerSocketPath)
        let bSees = try b.readGreeting(vectors: 2, others: 1)
        #expect(b.id == 1)
        // What B got for A is A's own eventfds, vector by vector.
        let aForB = try #require(bSees[0])
        for vector in 0..<2 { #expect(try sameEventFD(aForB[vector], a.vectors[vector]), "B rings A's vector \(vector)") }
        // A is told of B: its ID twice, with B's own eventfds.
        let join = try a.read(2)
        #expect(join.map(\.value) == [1, 1])
        for vector in 0..<2 { #expect(try sameEventFD(try #require(join[vector].fd), b.vectors[vector])) }

        // B leaves: A gets B's ID with no fd.
        b.socket.close()
        let leave = try a.read(1)
        #expect(leave[0].value == 1 && leave[0].fd == nil)
        #expect(server.waitForLog(containing: "peer 1 left"))
        // The next peer gets a new ID, not B's.
        let c = try RawPeer(joining: server.peerSocketPath, vectors: 2, others: 1)
        #expect(c.id == 2)
        #expect(try a.read(2).map(\.value) == [2, 2])
        #expect(server.stop() == 0)
        #expect(!fileExists(server.sharedMemoryObjectPath), "the shared-memory object is removed")
        #expect(!fileExists(server.peerSocketPath), "the socket is removed")
    }

    /// A peer whose greeting is still going out when it hangs up is never
    /// announced: the others' next message is the next real join.
    @Test func aPeerThatLeavesMidGreetingIsAnnouncedToNobody() throws {
        // 20 peers of 64 vectors: a greeting of 1,347 messages with fds,
        // far more than a socket buffer holds, so it cannot all go out
        // while the newcomer reads nothing.
        let server = try ServerProcess(multiPeer: ["-n", "64", "-l", "64K"])
        let watcher = try RawPeer(joining: server.peerSocketPath, vectors: 64, others: 0)
        var others: [RawPeer] = []
        for index in 1..<20 {
            others.append(try RawPeer(joining: server.peerSocketPath, vectors: 64, others: index))
            #expect(try watcher.read(64).allSatisfy { $0.value == Int64(index) && $0.fd != nil })
            // The ones already there are told too; nobody reads theirs: fine.
        }
        let leaver = try RawPeer(connectingTo: server.peerSocketPath)
        leaver.socket.close()
        #expect(server.waitForLog(containing: "peer 20 left"), "the server saw it go; log:\n\(server.log)")
        #expect(server.log.contains("nobody was told of it"))
        let next = try RawPeer(joining: server.peerSocketPath, vectors: 64, others: 20)
        #expect(next.id == 21)
        let seen = try watcher.read(64)
        #expect(seen.allSatisfy { $0.value == 21 && $0.fd != nil }, "the watcher's next messages are peer 21's join, not 20's departure")
        #expect(server.stop() == 0)
    }

    @Test func aPeerThatNeverReadsIsDroppedAndTheOthersAreServed() throws {
        let server = try ServerProcess(multiPeer: ["--max-queued-messages", "50"])
        let watcher = try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 0)
        let silent = try RawPeer(connectingTo: server.peerSocketPath)  // peer 1, never reads
        #expect(try watcher.read(1).map(\.value) == [1])
        // Joins and leaves until the silent peer's socket buffer and then
        // its queue are full: each costs it two messages. The watcher reads
        // all of its own as they come.
        var cycles = 0
        var departed = false
        while !departed, cycles < 2000 {
            // (Once the silent peer is gone, a passer is told of the watcher only.)
            let passer = try RawPeer(joining: server.peerSocketPath, vectors: 1, others: nil)
            passer.socket.close()
            cycles += 1
            var passerLeft = false
            while !passerLeft {
                let message = try watcher.read(1)[0]
                passerLeft = message.value == passer.id && message.fd == nil
                if message.value == 1 && message.fd == nil { departed = true }
            }
        }
        // The drop may have come with the last passer's departure.
        if !departed {
            let message = try watcher.read(1)[0]
            departed = message.value == 1 && message.fd == nil
        }
        #expect(departed, "the watcher is told the silent peer left (after \(cycles) join/leave cycles)")
        #expect(server.log.contains("dropped peer 1"), "log tail:\n\(server.log.suffix(800))")
        #expect(server.log.contains("more than --max-queued-messages 50"))
        #expect(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 1).id > 1)
        _ = silent
        #expect(server.stop() == 0)
    }

    @Test func beyondMaxPeersANewcomerIsRefusedClearly() throws {
        let server = try ServerProcess(multiPeer: ["--max-peers", "3"])
        var peers: [RawPeer] = []
        for index in 0..<3 { peers.append(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: index)) }
        let refused = try RawPeer(connectingTo: server.peerSocketPath)
        let reply = try receiveExactly(refused.socket, count: 16, maximumFDs: 2)
        #expect(reply.bytes == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "version -1, then the end")
        #expect(reply.fds.isEmpty)
        #expect(server.waitForLog(containing: "3 peers are connected (--max-peers 3)"))
        // When one leaves, there is room again.
        peers.removeLast().socket.close()
        #expect(server.waitForLog(containing: "peer 2 left"))
        #expect(try RawPeer(joining: server.peerSocketPath, vectors: 1, others: 2).id == 3)
        #expect(server.stop() == 0)
    }

    /// 1,000 peers at once (QEMU's server aborts at about 114), each told
    /// of every other: about a million messages with fds.
    @Test func aThousandPeersAtOnce() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 && limit.rlim_max >= 4096 {
            limit.rlim_cur = min(limit.rlim_max, 8192)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let count = 1000
        let server = try ServerProcess(multiPeer: ["--max-peers", "\(count)"])
        /// What one peer has received so far.
        struct Received {
            var partial: [UInt8] = []
            var partialHasFD = false
            var messages = 0
            var id: Int64?
            var others = Set<Int64>()
        }
        var sockets: [OwnedFD] = []
        var received: [Received] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
        defer { buffer.deallocate() }
        /// Reads what the peers have, without waiting: the 2nd message is a
        /// peer's ID, and after the memory every message with an fd whose
        /// value is not its own ID tells it of another peer.
        func drain() throws {
            var entries = sockets.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            guard poll(&entries, nfds_t(entries.count), 1) > 0 else { return }
            for (index, entry) in entries.enumerated() where entry.revents != 0 {
                while true {
                    var peer = received[index]
                    let wanted = 8 - peer.partial.count
                    let result = try UnixSocket.receive(sockets[index], into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), maximumFDs: 2)
                    guard case let .data(count, fds, _) = result else { break }
                    if !fds.isEmpty { peer.partialHasFD = true }
                    fds.forEach { $0.close() }
                    peer.partial += buffer[..<count]
                    if peer.partial.count == 8 {
                        let value = peer.partial.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(as: Int64.self)) }
                        peer.messages += 1
                        if peer.messages == 2 {
                            peer.id = value
                        } else if peer.messages > 3, peer.partialHasFD, value != peer.id {
                            peer.others.insert(value)
                        }
                        peer.partial = []
                        peer.partialHasFD = false
                    }
                    received[index] = peer
                }
            }
        }
        for _ in 0..<count {
            let socket = try UnixSocket.connect(path: server.peerSocketPath)
            _ = fcntl(socket.rawValue, F_SETFL, fcntl(socket.rawValue, F_GETFL) | O_NONBLOCK)
            sockets.append(socket)
            received.append(Received())
            try drain()
        }
        let deadline = monotonicSeconds() + 120
        while received.contains(where: { $0.others.count < count - 1 }), monotonicSeconds() < deadline { try drain() }
        #expect(Set(received.compactMap(\.id)).count == count, "every peer got its own ID")
        let short = received.filter { $0.others.count != count - 1 }
        #expect(short.isEmpty, "\(short.count) peers were not told of all \(count - 1) others, e.g. \(short.prefix(3).map(\.others.count))")
        let refused = try RawPeer(connectingTo: server.peerSocketPath)
        #expect(try receiveExactly(refused.socket, count: 16, maximumFDs: 2).bytes == [UInt8](repeating: 0xFF, count: 8))
        #expect(server.stop() == 0)
    }
}
