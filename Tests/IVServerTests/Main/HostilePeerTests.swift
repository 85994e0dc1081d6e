import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

/// Runs a python3 HALD client as another user (setpriv); what it got.
func haldHandshakeAsUser(uid: UInt32, gid: UInt32, groups: [UInt32] = [], socket: String, region: String) throws -> String {
    let script = """
        import socket, struct, array
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect('\(socket)')
        except OSError as e:
            print('connect-failed', e.errno); raise SystemExit
        s.settimeout(5)
        greeting = s.recv(4)
        if len(greeting) < 4: print('closed-before-greeting'); raise SystemExit
        s.send(struct.pack('<h', \(region.utf8.count)) + b'\(region)')
        msg, anc, flags, addr = s.recvmsg(8, socket.CMSG_SPACE(16))
        fds = array.array('i')
        for level, kind, data in anc: fds.frombytes(data)
        print('fds', len(fds), 'bytes', len(msg))
        """
    let directory = TemporaryDirectory()
    writeText(script, to: directory.path + "/client.py")
    chmod(directory.path, 0o755)
    chmod(directory.path + "/client.py", 0o644)
    let groupList = groups.isEmpty ? "--clear-groups" : "--groups=" + groups.map(String.init).joined(separator: ",")
    let log = directory.path + "/out"
    let pid = try spawn(["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", groupList,
                         "/usr/bin/env", "python3", directory.path + "/client.py"], logPath: log)
    guard waitForExit(pid, seconds: 20) != nil else { throw TestFailure("client as uid \(uid) did not finish") }
    return readText(log).split(separator: "\n").first.map(String.init) ?? ""
}

/// /proc/PID/fd of the server, settled: counts can lag a close by a moment.
func settledFDCount(_ server: ServerProcess, expected: Int) -> Int {
    let deadline = monotonicSeconds() + 5
    var count = server.openFDCount()
    while count != expected && monotonicSeconds() < deadline {
        sleep(milliseconds: 10)
        count = server.openFDCount()
    }
    return count
}

@Suite("Hostile and careless peers", .serialized)
struct HostilePeerTests {
    @Test("a silent client is closed at the handshake deadline, and a slow but complete one is served")
    func handshakeDeadline() throws {
        let server = try ServerProcess(arguments: ["--handshake-timeout", "0.3"])
        let silent = try connectClient(server.clientSocketPath)
        let start = monotonicSeconds()
        #expect(try receiveExactly(silent, count: 4, maximumFDs: 0).bytes.count == 4)
        let after = try receiveExactly(silent, count: 1, maximumFDs: 0)
        let elapsed = monotonicSeconds() - start
        #expect(after.bytes.isEmpty, "closed without anything after the version")
        #expect(elapsed >= 0.25, "closed after \(elapsed) s, before its deadline")
        #expect(server.waitForLog(containing: "no complete handshake within 300 ms"))
        let reply = try haldHandshake(server.clientSocketPath, region: "hwcomposer")
        #expect(reply.fds.count == 3)
        #expect(server.stop() == 0)
    }

    @Test("with 1,000 silent connections open a handshake still completes; they are all closed at the deadline")
    func thousandSilent() throws {
        // All from this one process: give it room for them (the shares by
        // process and user have their own tests).
        let server = try ServerProcess(arguments: ["--handshake-timeout", "3", "--max-pending-per-process", "2000",
                                                   "--max-pending-per-user", "2000"])
        let baseline = server.openFDCount()
        let silent = try (0..<1000).map { _ in try connectClient(server.clientSocketPath) }
        #expect(try haldHandshake(server.clientSocketPath, region: "e2e_primary").fds.count == 3)
        // served while every silent client was still connected: it did not
        // wait for their deadlines
        #expect(silent.allSatisfy { !UnixSocket.peerHasHungUp($0) }, "the handshake waited behind silent clients")
        for socket in silent {
            let greeting = try receiveExactly(socket, count: 4, maximumFDs: 0)
            #expect(greeting.bytes.count == 4)
            #expect(try receiveExactly(socket, count: 1, maximumFDs: 0).bytes.isEmpty)
        }
        #expect(settledFDCount(server, expected: baseline) == baseline, "every silent connection's fd is closed")
        #expect(server.stop() == 0)
    }

    @Test("a full server: a process over its share waits without a reply and is greeted as room opens; a newcomer within its share takes the room of the busiest")
    func pendingCap() throws {
        let server = try ServerProcess(arguments: ["--max-pending", "4", "--max-pending-per-process", "2", "--handshake-timeout", "1"])
        // Alone, this process fills the server: nobody waits while there is room.
        let silent = try (0..<4).map { _ in try connectClient(server.clientSocketPath) }
        for socket in silent { #expect(try receiveExactly(socket, count: 4, maximumFDs: 0).bytes.count == 4) }
        let extra = try connectClient(server.clientSocketPath)
        #expect(server.waitForLog(containing: "host client process pid \(getpid()) uid \(getuid()) is over its share: 4 host clients are "
            + "mid-handshake (--max-pending) and this process holds 2 (--max-pending-per-process); its new connections wait"))
        var entry = pollfd(fd: extra.rawValue, events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 0) == 0, "waiting: not a byte, not closed")
        // Another process, within its share: the busiest (this one) makes room.
        #expect(try haldHandshakeAsUser(uid: 0, gid: 0, socket: server.clientSocketPath, region: "hwcomposer") == "fds 3 bytes 8")
        #expect(try receiveExactly(silent[0], count: 1, maximumFDs: 0).bytes.isEmpty, "the busiest process's oldest made room")
        // Room opens as soon as that newcomer is served: the waiting one is
        // greeted then.
        #expect(try receiveExactly(extra, count: 4, maximumFDs: 0).bytes.count == 4, "greeted when room opened")
        try sendAll(extra, request("e2e_primary"))
        let grant = try receiveExactly(extra, count: 16, maximumFDs: 4)
        #expect(grant.bytes.count == 8 && grant.fds.count == 3, "and served")
        #expect(server.waitForLog(containing: "host client process pid \(getpid()) has no pending or waiting connection now; "
            + "meanwhile 1 of its connections were served, 1 waited for room"), "\(server.log)")
        #expect(!server.log.contains("client refused (pid \(getpid())"), "its refusals were counted, not logged one by one")
        #expect(server.stop() == 0)
    }

    @Test("default options: one process holding 10,000 silent connections, reconnecting as they close, locks out none of 16 others")
    func oneProcessCannotLockOthersOut() throws {
        let server = try ServerProcess()
        let directory = TemporaryDirectory()
        // The hog: 10,000 connections that never send a byte; each one the
        // server closes is opened again.
        writeText("""
            import resource, selectors, socket, sys
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            path, selector, opened = sys.argv[1], selectors.DefaultSelector(), 0
            def connect():
                global opened
                s = socket.socket(socket.AF_UNIX); s.connect(path); s.setblocking(False)
                selector.register(s, selectors.EVENT_READ); opened += 1
                if opened == 10000: print('holding 10000', flush=True)
            for _ in range(10000): connect()
            while True:
                for key, _ in selector.select():
                    try: data = key.fileobj.recv(64)
                    except OSError: data = b''
                    if not data:
                        selector.unregister(key.fileobj); key.fileobj.close(); connect()
            """, to: directory.path + "/hog.py")
        writeText("""
            import array, socket, struct, sys
            path, rounds, ok, failed = sys.argv[1], int(sys.argv[2]), 0, 0
            for i in range(rounds):
                try:
                    # a blocking connect, bounded as IVClient's is: it waits its turn
                    # when the listen queue is full (a timeout here would make it
                    # non-blocking, and a full queue would be an instant EAGAIN)
                    s = socket.socket(socket.AF_UNIX)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack('ll', 20, 0))
                    s.connect(path); s.settimeout(20)
                    if s.recv(4) != b'\\0\\0\\0\\0': raise OSError('no greeting')
                    s.send(struct.pack('<h', 11) + b'e2e_primary')
                    msg, anc, flags, addr = s.recvmsg(8, socket.CMSG_SPACE(12))
                    fds = array.array('i')
                    for level, kind, data in anc: fds.frombytes(data)
                    if len(msg) != 8 or len(fds) != 3: raise OSError(f'{len(msg)} bytes, {len(fds)} fds')
                    for fd in fds: socket.close(fd)
                    ok += 1
                except OSError as e:
                    failed += 1; print('failure:', e)
                finally:
                    s.close()
            print('ok', ok, 'failed', failed, flush=True)
            """, to: directory.path + "/client.py")
        let hogLog = directory.path + "/hog.log"
        let hog = try spawn(["/usr/bin/env", "python3", directory.path + "/hog.py", server.clientSocketPath], logPath: hogLog)
        defer { kill(hog, SIGKILL); _ = waitForExit(hog, seconds: 10) }
        #expect(eventually(seconds: 60) { readText(hogLog).contains("holding 10000") }, "the hog opened its connections: \(readText(hogLog))")
        #expect(server.waitForLog(containing: "host client process pid \(hog) uid \(getuid()) is over its share"))
        let clients = try (0..<16).map { index in
            try spawn(["/usr/bin/env", "python3", directory.path + "/client.py", server.clientSocketPath, "25"],
                      logPath: directory.path + "/client\(index).log")
        }
        for (index, client) in clients.enumerated() {
            #expect(waitForExit(client, seconds: 120) == 0)
            #expect(readText(directory.path + "/client\(index).log") == "ok 25 failed 0\n", "client \(index)")
        }
        #expect(waitpid(hog, nil, WNOHANG) == 0, "the hog was still at it")
        #expect(server.stop() == 0)
        let refusals = server.log.split(separator: "\n").filter { $0.contains("no complete handshake") }
        #expect(refusals.allSatisfy { $0.contains("(pid \(hog) ") }, "no other client waited for a deadline: \(refusals.prefix(5))")
    }

    @Test("a client that sends fds is refused without fds, and the fds it sent are closed")
    func clientSendsFDs() throws {
        let server = try ServerProcess()
        let baseline = server.openFDCount()
        let socket = try connectClient(server.clientSocketPath)
        _ = try receiveExactly(socket, count: 4, maximumFDs: 0)
        let pipeFDs = UnsafeMutablePointer<Int32>.allocate(capacity: 2)
        defer { pipeFDs.deallocate() }
        #expect(pipe(pipeFDs) == 0)
        let readEnd = OwnedFD(taking: pipeFDs[0])
        let writeEnd = OwnedFD(taking: pipeFDs[1])
        // eight fds: more than the server makes room for, so some are truncated
        _ = try UnixSocket.send(socket, request("hwcomposer")[...], fds: Array(repeating: writeEnd.rawValue, count: 8))
        let reply = try receiveExactly(socket, count: 8, maximumFDs: 4)
        #expect(reply.bytes.isEmpty && reply.fds.isEmpty)
        #expect(server.waitForLog(containing: "sent file descriptors (closed unread)"))
        #expect(settledFDCount(server, expected: baseline) == baseline)
        // the pipe's write end is held by nobody else now: the read end sees EOF
        writeEnd.close()
        var byte: UInt8 = 0
        #expect(read(readEnd.rawValue, &byte, 1) == 0, "the server kept a copy of the fd it was sent")
        #expect(server.stop() == 0)
    }

    @Test("10,000 mixed good and bad handshakes leave the server with the fds it started with")
    func noLeaks() throws {
        // one process leaving many bad handshakes pending: room for them
        let server = try ServerProcess(arguments: ["--handshake-timeout", "0.2", "--max-pending-per-process", "10000",
                                                   "--max-pending-per-user", "10000"])
        let baseline = server.openFDCount()
        #expect(baseline > 0)
        for round in 0..<10_000 {
            switch round % 8 {
            case 0, 1:
                let reply = try haldHandshake(server.clientSocketPath, region: defaultPlan.regions[round % 8].name)
                #expect(reply.fds.count == 3)
            case 2:
                _ = try haldHandshake(server.clientSocketPath, request: [0xFF, 0xFF])
            case 3:
                _ = try haldHandshake(server.clientSocketPath, request: request("no_such_region"))
            case 4:
                // early close mid-name
                let socket = try connectClient(server.clientSocketPath)
                try sendAll(socket, [10, 0, 0x68])
            case 5:
                // reset: close with unread data
                let socket = try connectClient(server.clientSocketPath)
                var linger = linger(l_onoff: 1, l_linger: 0)
                setsockopt(socket.rawValue, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                try sendAll(socket, request("hwcomposer"))
            case 6:
                // vanish before reading the granted fds (EPIPE/ECONNRESET on send)
                let socket = try connectClient(server.clientSocketPath)
                try sendAll(socket, request("fb_broadcast"))
            default:
                // a silent one now and then, left to the deadline
                if round % 512 == 7 {
                    let socket = try connectClient(server.clientSocketPath)
                    _ = try receiveExactly(socket, count: 4, maximumFDs: 0)
                    _ = try receiveExactly(socket, count: 1, maximumFDs: 0)
                } else {
                    let vm = try connectClient(server.qemuSocketPath)
                    _ = try readQemuMessages(vm, count: 3)
                }
            }
        }
        #expect(try haldHandshake(server.clientSocketPath, region: "hwcomposer").fds.count == 3)
        // Plus one pidfd: the server remembers the last VM's process (this
        // one, still running) to skip re-reading its command line.
        #expect(settledFDCount(server, expected: baseline + 1) == baseline + 1)
        #expect(server.openFDTargets().filter { $0 == "anon_inode:[pidfd]" }.count == 1)
        #expect(server.stop() == 0)
    }

    @Test("only root, the server's user and allowed users or groups are served",
          .enabled(if: getuid() == 0, "needs root: the clients run as other users (setpriv)"))
    func peerCredentials() throws {
        let server = try ServerProcess(arguments: ["--socket-mode", "0666"])
        chmod(server.directory.path, 0o755)
        #expect(try haldHandshakeAsUser(uid: 65534, gid: 65534, socket: server.clientSocketPath, region: "hwcomposer")
            == "closed-before-greeting")
        #expect(server.waitForLog(containing: "refused pid "), "the refusal is logged")
        #expect(server.log.contains("uid 65534 gid 65534 on \(server.clientSocketPath)"))
        #expect(server.stop() == 0)

        let byUser = try ServerProcess(arguments: ["--socket-mode", "0666", "--allow-uid", "65534"])
        chmod(byUser.directory.path, 0o755)
        #expect(try haldHandshakeAsUser(uid: 65534, gid: 65534, socket: byUser.clientSocketPath, region: "hwcomposer")
            == "fds 3 bytes 8")
        #expect(byUser.stop() == 0)

        // a supplementary group counts, as for a user added to a group
        let byGroup = try ServerProcess(arguments: ["--socket-mode", "0666", "--allow-gid", "4242"])
        chmod(byGroup.directory.path, 0o755)
        #expect(try haldHandshakeAsUser(uid: 65534, gid: 65534, groups: [4242], socket: byGroup.clientSocketPath, region: "hwcomposer")
            == "fds 3 bytes 8")
        #expect(try haldHandshakeAsUser(uid: 65534, gid: 65534, socket: byGroup.clientSocketPath, region: "hwcomposer")
            == "closed-before-greeting")
        #expect(byGroup.stop() == 0)
    }

    @Test("socket and shared-memory modes: 0660 and 0600 by default, exactly as asked otherwise, group applied")
    func fileModes() throws {
        func mode(_ path: String) -> (mode: UInt32, gid: UInt32) {
            var info = stat()
            lstat(path, &info)
            return (info.st_mode & 0o777, info.st_gid)
        }
        let plain = try ServerProcess()
        #expect(mode(plain.clientSocketPath).mode == 0o660)
        #expect(mode(plain.qemuSocketPath).mode == 0o660)
        #expect(mode(plain.sharedMemoryPath).mode == 0o600)
        #expect(plain.stop() == 0)
        let custom = try ServerProcess(arguments: ["--socket-mode", "0600", "--shm-mode", "0640", "--socket-group", "4242"])
        #expect(mode(custom.clientSocketPath) == (0o600, 4242))
        #expect(mode(custom.sharedMemoryPath).mode == 0o640)
        #expect(custom.stop() == 0)
        let group = try ServerProcess(arguments: ["--socket-group", "4242", "--socket-mode", "0770"])
        #expect(mode(group.qemuSocketPath) == (0o770, 4242))
        #expect(group.stop() == 0)
    }
}
