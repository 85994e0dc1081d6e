import WireFormat
import LinuxSystem
@testable import ServerCore
import EventLoop
import Glibc
import Testing
@testable import IVServer

@Suite("Peer socket output")
struct PeerSocketTests {
    final class Recorder: PeerSocketDelegate {
        var events: [String] = []
        var whenDone: () -> Void = {}

        func peerSocket(_ socket: PeerSocket, produced event: PeerSocket.Event) {
            switch event {
            case .flushed: events.append("flushed")
            case let .failed(error): events.append("failed: \(error)")
            case .received, .unexpectedFDs, .endOfStream: events.append("input")
            }
            whenDone()
        }
    }

    /// A connected pair: the server's end non-blocking, as accepted sockets are.
    func socketPair() throws -> (server: OwnedFD, client: OwnedFD) {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw TestFailure("socketpair: \(String(cString: strerror(errno)))")
        }
        let serverEnd = OwnedFD(taking: pair[0])
        guard fcntl(serverEnd.rawValue, F_SETFL, fcntl(serverEnd.rawValue, F_GETFL) | O_NONBLOCK) == 0 else {
            throw TestFailure("fcntl O_NONBLOCK: \(String(cString: strerror(errno)))")
        }
        return (serverEnd, OwnedFD(taking: pair[1]))
    }

    /// Message `index`: mostly small, some larger than the socket takes at
    /// once, so sends are cut short inside a message as well as between.
    func payload(_ index: Int) -> [UInt8] {
        let size = index % 10 == 9 ? 9000 + index : 1 + index % 13
        return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
    }

    @Test("messages the socket cannot take at once go out whole, in order, each fd with its message's first byte")
    func partialSends() throws {
        let (serverEnd, clientEnd) = try socketPair()
        var small: Int32 = 4096
        setsockopt(serverEnd.rawValue, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        let carried = OwnedFD(taking: open("/dev/null", O_RDONLY | O_CLOEXEC))

        let messages = (0..<120).map { index in
            OutgoingMessages.Message(bytes: payload(index), fds: index % 3 == 0 ? [carried.rawValue] : [])
        }
        let trailer = OutgoingMessages.Message(bytes: [0xAB, 0xCD], fds: [carried.rawValue])
        var expected: [UInt8] = []
        var fdOffsets: [Int] = []
        for message in messages + [trailer] {
            if !message.fds.isEmpty { fdOffsets.append(expected.count) }
            expected += message.bytes
        }

        // A slow reader: small reads with pauses, so the server's sends
        // keep running into a full socket.
        // Where each fd arrived: the range of the read that brought it (a
        // read that brings fds ends with the data they were sent with).
        let received = Shared<(bytes: [UInt8], fdReads: [Range<Int>])>(([], []))
        let total = expected.count
        let reader = TestThread {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1500, alignment: 8)
            defer { buffer.deallocate() }
            while received.value.bytes.count < total {
                usleep(200)
                guard case let .data(count, fds, _)? = try? UnixSocket.receive(clientEnd, into: buffer, maximumFDs: 4) else { return }
                received.update { state in
                    if !fds.isEmpty { state.fdReads += Array(repeating: state.bytes.count..<state.bytes.count + count, count: fds.count) }
                    state.bytes += buffer[..<count]
                }
            }
        }
        try UnixSocket.setTimeouts(clientEnd, seconds: 5)

        let loop = try EventLoop()
        let set = try ReadinessSet(loop: loop)
        let socket = PeerSocket(readiness: set, fd: serverEnd, peer: nil, readSize: 64)
        let recorder = Recorder()
        socket.delegate = recorder
        var deadline: TimerHandle?
        func finish() {
            socket.close()
            set.close()
            deadline?.close()
        }
        recorder.whenDone = finish
        // A broken flush must fail the test, not hang it.
        deadline = try TimerHandle(loop: loop) {
            recorder.events.append("not flushed within 10 s")
            finish()
        }
        deadline?.arm(milliseconds: 10_000)
        socket.send(OutgoingMessages(messages))
        socket.send(OutgoingMessages([trailer]))  // queued behind the first batch
        loop.run()
        reader.join()
        loop.close()

        #expect(recorder.events == ["flushed"])
        #expect(received.value.bytes.count == expected.count)
        #expect(received.value.bytes == expected)
        let fdReads = received.value.fdReads
        #expect(fdReads.count == fdOffsets.count)
        for (offset, read) in zip(fdOffsets, fdReads) {
            #expect(read.contains(offset), "the fd sent with the message at \(offset) arrived with bytes \(read)")
        }
    }

    @Test("a peer that resets the connection is a failure with the socket's own errno, from the read")
    func resetIsTheSocketsOwnError() throws {
        let (serverEnd, clientEnd) = try socketPair()
        let loop = try EventLoop()
        let set = try ReadinessSet(loop: loop)
        let socket = PeerSocket(readiness: set, fd: serverEnd, peer: nil, readSize: 64)
        let recorder = Recorder()
        socket.delegate = recorder
        var deadline: TimerHandle?
        recorder.whenDone = { [unowned recorder] in
            guard recorder.events.last?.hasPrefix("failed") == true || recorder.events.count > 4 else { return }
            socket.close()
            set.close()
            deadline?.close()
        }
        deadline = try TimerHandle(loop: loop) { [unowned recorder] in
            recorder.events.append("no failure within 10 s")
            socket.close()
            set.close()
        }
        deadline?.arm(milliseconds: 10_000)
        // The server's bytes wait unread in the client's buffer; the client
        // closes: a reset (ECONNRESET), which only the socket knows.
        socket.send(OutgoingMessages([.init(bytes: [1, 2, 3], fds: [])]))
        clientEnd.close()
        loop.run()
        loop.close()
        #expect(recorder.events.first == "flushed")
        let failure = recorder.events.dropFirst().first { $0.hasPrefix("failed") }
        #expect(failure == "failed: \(SystemError(.recvmsg, errno: ECONNRESET))", "\(recorder.events)")
    }

    @Test("epoll's bits in the readiness set's terms: a hang-up reads as the end of the stream, an error is only 'failed'")
    func readinessFromEpoll() {
        // Linux's values (sys/epoll.h), written out: this file does not import the C helpers.
        let (epollIn, epollOut, epollErr, epollHup): (UInt32, UInt32, UInt32, UInt32) = (0x001, 0x004, 0x008, 0x010)
        #expect(ReadinessSet.readiness(epollEvents: epollIn) == .readable)
        #expect(ReadinessSet.readiness(epollEvents: epollHup) == .readable)
        #expect(ReadinessSet.readiness(epollEvents: epollOut) == .writable)
        #expect(ReadinessSet.readiness(epollEvents: epollErr) == .failed)
        #expect(ReadinessSet.readiness(epollEvents: epollErr | epollHup) == [.failed, .readable])
    }
}
