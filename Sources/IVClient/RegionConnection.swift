import LinuxSystem
import Glibc
import Synchronization
import WireFormat

/// A host client's hold on one region: the fds from the HALD handshake, the
/// layout read from the shared memory, the region mapped, and the vSoC
/// signalling (docs/protocols.md §3). Opening blocks up to a timeout; after
/// that nothing here talks to the server again.
///
///     let display = try RegionConnection.open(region: "hwcomposer")
///     try display.memory.store(1, offset: Int(display.descriptor.dataOffset))
///     try display.sendSignal(offset: display.descriptor.dataOffset)
///     if let count = try display.waitForGuest(timeout: .seconds(1)) { ... }
public final class RegionConnection: Sendable {
    /// ivserver's default client socket.
    public static let defaultSocketPath = HALDProtocol.defaultSocketPath

    public let socketPath: String
    public let regionName: String
    /// The region's index, which is also its interrupt vector.
    public let regionIndex: Int
    public let descriptor: RegionDescriptor
    /// The whole layout, as the shared memory's header says.
    public let layout: LayoutHeader
    /// The region's bytes, mapped once.
    public let memory: RegionMemory
    /// Rung by the guest (and by QEMU for its doorbell) for this region.
    public let guestToHost: OwnedFD
    /// Rung by host clients; QEMU turns it into MSI-X vector `regionIndex`.
    public let hostToGuest: OwnedFD
    public let sharedMemory: OwnedFD

    private init(socketPath: String, regionName: String, regionIndex: Int, layout: LayoutHeader,
                 memory: RegionMemory, fds: GrantedRegion) {
        self.socketPath = socketPath
        self.regionName = regionName
        self.regionIndex = regionIndex
        self.layout = layout
        self.descriptor = layout.regions[regionIndex]
        self.memory = memory
        guestToHost = fds.guestToHost
        hostToGuest = fds.hostToGuest
        sharedMemory = fds.sharedMemory
    }

    /// Connects to `socket`, asks for `region` and maps it. When the server
    /// refuses, the layout is looked up through a well-known region name so
    /// the error can list the regions that do exist.
    public static func open(region: String, socket: String = defaultSocketPath,
                            timeout: Duration = .seconds(5)) throws(IVClientError) -> RegionConnection {
        let handshake = HandshakeClient(socketPath: socket, region: region, timeout: timeout)
        let fds: GrantedRegion
        do {
            fds = try handshake.run()
        } catch where error.kind == .refused {
            // Only to say which regions there are: a layout that cannot be
            // read leaves the refusal as it came.
            if let layout = try? readLayout(socket: socket, timeout: timeout), layout.region(named: region) == nil {
                throw IVClientError(.unknownRegion(available: layout.regions.map(\.name)), socketPath: socket, region: region)
            }
            throw error
        }
        let layout = try readLayout(fds.sharedMemory, socketPath: socket, region: region)
        guard let (index, descriptor) = layout.region(named: region) else {
            throw IVClientError(.unknownRegion(available: layout.regions.map(\.name)), socketPath: socket, region: region)
        }
        let memory = try RegionMemory(fd: fds.sharedMemory, offset: UInt64(descriptor.beginOffset),
                                      count: Int(descriptor.size), socketPath: socket, region: region)
        return RegionConnection(socketPath: socket, regionName: region, regionIndex: index, layout: layout,
                                memory: memory, fds: fds)
    }

    /// The running server's state as text, a line each (what its SIGUSR1
    /// logs): the layout and memory, the VM, each region's clients, the
    /// refusals and pending handshakes. Asked on the client socket, so the
    /// server's access rules apply as to any handshake.
    public static func serverStatus(socket: String = defaultSocketPath, timeout: Duration = .seconds(5)) throws(IVClientError) -> String {
        try HandshakeClient(socketPath: socket, region: HALDProtocol.statusRequestName, timeout: timeout).query()
    }

    /// Who the VM attached to the server is (its process, that process's
    /// start, when it attached), or nil when none is. A host client that
    /// compares it with what it saw before learns that the VM changed: a
    /// new VM finds every region's signalling state reset (and the data as
    /// it was left), so a pending interrupt of the VM before is gone.
    public static func attachedVM(socket: String = defaultSocketPath,
                                  timeout: Duration = .seconds(5)) throws(IVClientError) -> HALDProtocol.VMInfo? {
        let client = HandshakeClient(socketPath: socket, region: HALDProtocol.vmInfoRequestName, timeout: timeout)
        let text = try client.query()
        guard let info = HALDProtocol.VMInfo.parse(text) else {
            throw client.error(.protocolViolation("an answer about the VM that is not a vm line: \(text.prefix(80))"))
        }
        return info
    }

    /// `attachedVM(socket:)` on the socket this region was opened on.
    public func attachedVM(timeout: Duration = .seconds(5)) throws(IVClientError) -> HALDProtocol.VMInfo? {
        try Self.attachedVM(socket: socketPath, timeout: timeout)
    }

    /// The live layout, whatever its regions are called: asked with
    /// ivserver's layout request; from a server without it (an older
    /// ivserver, the original one), through the shared memory of the first
    /// of `names` the server grants.
    public static func readLayout(socket: String = defaultSocketPath,
                                  timeout: Duration = .seconds(5)) throws(IVClientError) -> LayoutHeader {
        let client = HandshakeClient(socketPath: socket, region: HALDProtocol.layoutRequestName, timeout: timeout)
        let answer: [UInt8]
        do {
            answer = try client.queryBytes()
        } catch where error.kind == .refused {
            return try readLayout(socket: socket, tryingRegions: HALDProtocol.wellKnownRegionNames, timeout: timeout)
        }
        guard let (size, header) = HALDProtocol.LayoutAnswer.decode(answer) else {
            throw client.error(.protocolViolation("a layout answer of \(answer.count) bytes"))
        }
        do throws(HeaderError) {
            return try LayoutHeader.decode(header, fileSize: size)
        } catch {
            throw client.error(.badLayout(error))
        }
    }

    /// The live layout, through the shared memory of the first of `names`
    /// the server grants (the protocol gives the shared memory only to a
    /// handshake that names a region, so one name must be right).
    public static func readLayout(socket: String = defaultSocketPath,
                                  tryingRegions names: [String],
                                  timeout: Duration = .seconds(5)) throws(IVClientError) -> LayoutHeader {
        var refusal = IVClientError(.refused, socketPath: socket, region: names.first)
        for name in names {
            do {
                let fds = try HandshakeClient(socketPath: socket, region: name, timeout: timeout).run()
                return try readLayout(fds.sharedMemory, socketPath: socket, region: name)
            } catch where error.kind == .refused || error.kind.isInvalidArgument {
                refusal = error
            }
        }
        throw refusal
    }

    /// Reads and checks the header with pread: the layout descriptor, then
    /// exactly the descriptors it announces, against the file's size.
    static func readLayout(_ sharedMemory: OwnedFD, socketPath: String, region: String) throws(IVClientError) -> LayoutHeader {
        let fileSize: UInt64
        do {
            fileSize = try SharedMemoryFile.size(of: sharedMemory)
        } catch {
            throw IVClientError(error, "fstat of the shared memory", socketPath: socketPath, region: region)
        }
        func readBytes(_ count: Int) throws(IVClientError) -> [UInt8] {
            do {
                return try Posix.read(sharedMemory, at: 0, count: count)
            } catch {
                throw IVClientError(error, "pread of the layout header", socketPath: socketPath, region: region)
            }
        }
        func checked<Value>(_ body: () throws(HeaderError) -> Value) throws(IVClientError) -> Value {
            do throws(HeaderError) {
                return try body()
            } catch {
                throw IVClientError(.badLayout(error), socketPath: socketPath, region: region)
            }
        }
        let first = try readBytes(LayoutHeader.layoutDescriptorSize)
        let length = try checked { () throws(HeaderError) in try LayoutHeader.encodedLength(descriptorBytes: first, fileSize: fileSize) }
        let bytes = try readBytes(length)
        return try checked { () throws(HeaderError) in try LayoutHeader.decode(bytes, fileSize: fileSize) }
    }

    /// An error about this region and socket.
    public func error(_ kind: IVClientError.Kind) -> IVClientError {
        IVClientError(kind, socketPath: socketPath, region: regionName)
    }

    /// A failed system call about this region and socket.
    func error(_ failure: SystemError, _ what: String) -> IVClientError {
        IVClientError(failure, what, socketPath: socketPath, region: regionName)
    }

    /// A copy of `count` bytes at `offset` (region-relative), read from the
    /// shared-memory file rather than through the mapping: reading a hole
    /// of the sparse file this way allocates nothing, where touching the
    /// mapping would fill it with zero pages. For dumping large regions.
    public func readFromFile(offset: Int, count: Int) throws(IVClientError) -> [UInt8] {
        try memory.readFromFile(offset: offset, count: count)
    }

    // MARK: interrupts

    /// Interrupts the guest, as the original `MaybeInterruptPeer` does: sets
    /// the host_to_guest table's interrupt_signalled word and writes the
    /// host_to_guest eventfd (QEMU turns it into MSI-X vector `regionIndex`)
    /// only when the word was 0. The guest takes an interrupt only through
    /// that word; while it is still 1 the guest has not taken the previous
    /// interrupt, and this one merges into it. Returns whether it rang.
    @discardableResult
    public func interruptGuest() throws(IVClientError) -> Bool {
        guard SignalTable(layout: descriptor.hostToGuest).raiseSignalWord(memory) else { return false }
        try ringGuest()
        return true
    }

    /// Writes the host_to_guest eventfd, for a word already raised.
    private func ringGuest() throws(IVClientError) {
        do {
            try EventFD.signal(hostToGuest)
        } catch {
            throw self.error(error, "write to the host_to_guest eventfd")
        }
    }

    /// Waits until the guest interrupts this region, at most `timeout` (nil:
    /// forever), as the original `WaitForInterrupt` does: an interrupt is
    /// the guest_to_host table's interrupt_signalled word being set, and
    /// taking it clears the word, so that the guest's next interrupt rings
    /// again. A ring of the guest_to_host eventfd without the word (a guest
    /// that only writes the Doorbell) counts too, and the word is cleared
    /// either way. Returns the number of rings taken (at least 1: rings
    /// coalesce), or nil on timeout. Another client of the region may take
    /// an interrupt first; this one then waits on. An interrupt whose word
    /// is taken before its ring arrives (the guest sets the word, then
    /// rings) is seen by the next call as one more wake-up.
    public func waitForGuest(timeout: Duration?) throws(IVClientError) -> UInt64? {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let table = SignalTable(layout: descriptor.guestToHost)
        while true {
            // The rings first, then the word: while the word is set the
            // guest does not ring, so no ring of a later interrupt can be
            // drained here with this one's (and its word, set again after
            // the take, counted once more by the next call).
            let drained: UInt64?
            do {
                drained = try EventFD.take(guestToHost)
            } catch {
                throw self.error(error, "read of the guest_to_host eventfd")
            }
            let flagged = table.takeSignalWord(memory)
            if flagged || drained != nil { return max(drained ?? 0, 1) }
            let ready: Bool
            do {
                ready = try Posix.isReadable(guestToHost, within: deadline.map { max($0 - ContinuousClock.now, .zero) })
            } catch {
                throw self.error(error, "poll of the guest_to_host eventfd")
            }
            if !ready { return nil }
        }
    }

    // MARK: signal tables

    /// Tells the guest that the futex word at `offset` (region-relative,
    /// 4-byte aligned, not 0) changed: queues it in the host_to_guest table
    /// and interrupts the guest unless an interrupt is already pending. With
    /// `roundTrip` the guest signals the same word back when it has seen it.
    /// A full table throws `signalTableFull` (the guest was interrupted, so
    /// it will drain the table: try again shortly).
    public func sendSignal(offset: UInt32, roundTrip: Bool = false) throws(IVClientError) {
        try checkSignalOffset(offset)
        if try !queueSignal(offset: offset, roundTrip: roundTrip) {
            throw error(.signalTableFull(offset: offset))
        }
    }

    /// Queues `offset` in the host_to_guest table and rings if the table's
    /// word went from 0 to 1; false when every slot holds another word.
    private func queueSignal(offset: UInt32, roundTrip: Bool) throws(IVClientError) -> Bool {
        switch SignalTable(layout: descriptor.hostToGuest).send(offset: offset, roundTrip: roundTrip, words: memory) {
        case .alreadyQueued, .queued(ring: false):
            return true
        case .queued(ring: true):
            try ringGuest()
            return true
        case let .full(ring):
            if ring { try ringGuest() }
            return false
        }
    }

    /// Round trips asked for by the guest that found the host_to_guest table
    /// full, oldest first. They are never dropped: the guest's sender sleeps
    /// until its echo comes. Each `processSignals` sends them before the
    /// echoes it adds.
    private let pendingEchoes = Mutex<[UInt32]>([])

    /// How many round-trip echoes wait for a free slot in the host_to_guest
    /// table (see `processSignals`).
    public var pendingEchoCount: Int { pendingEchoes.withLock { $0.count } }

    /// Queues as many waiting echoes as the table takes, oldest first;
    /// true when none is left.
    func sendPendingEchoes() throws(IVClientError) -> Bool {
        try pendingEchoes.withLock { (pending: inout [UInt32]) throws(IVClientError) -> Bool in
            while let offset = pending.first {
                guard try queueSignal(offset: offset, roundTrip: false) else { return false }
                pending.removeFirst()
            }
            return true
        }
    }

    /// Handles what the guest queued in the guest_to_host table: for each
    /// offset, calls `handler`, wakes the futex waiters on that word, and
    /// signals it back when the guest asked for a round trip. Offsets that
    /// are not words of this region are dropped. Returns how many were
    /// handled. Call it after `waitForGuest`, or use a `RegionWorker`.
    ///
    /// A round trip's echo is never dropped: when the host_to_guest table is
    /// full, the guest is interrupted to drain it and the echo waits, retried
    /// with short sleeps (50 µs growing to 5 ms) until a slot is free, at
    /// most `echoTimeout` (nil: as long as it takes, like the original).
    /// When that passes first, `signalTableFull` is thrown and the echoes
    /// that are left stay queued here for the next call; every entry of
    /// the table was handled all the same.
    @discardableResult
    public func processSignals(echoTimeout: Duration? = nil, _ handler: (UInt32) -> Void) throws(IVClientError) -> Int {
        var received: [(offset: UInt32, roundTrip: Bool)] = []
        SignalTable(layout: descriptor.guestToHost).drain(words: memory) { received.append(($0, $1)) }
        // The entries are taken from the table now, so every one is handled
        // even if waking one fails; the first failure is thrown after.
        var handled = 0
        var echoes: [UInt32] = []
        var failure: IVClientError?
        for (offset, roundTrip) in received where offset != 0 && Int(offset) <= memory.count - 4 {
            handler(offset)
            do throws(IVClientError) {
                try memory.wake(offset: Int(offset))
            } catch {
                failure = failure ?? error
            }
            if roundTrip { echoes.append(offset) }
            handled += 1
        }
        pendingEchoes.withLock { $0 += echoes }
        try deliverPendingEchoes(timeout: echoTimeout)
        if let failure { throw failure }
        return handled
    }

    /// Sends the waiting echoes, sleeping between tries while the table is
    /// full, for at most `timeout` (nil: until all are sent).
    private func deliverPendingEchoes(timeout: Duration?) throws(IVClientError) {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var backoff = RetryBackoff()
        while try !sendPendingEchoes() {
            var pause = backoff.advance()
            if let deadline {
                let left = deadline - ContinuousClock.now
                guard left > .zero else {
                    throw error(.signalTableFull(offset: pendingEchoes.withLock { $0.first ?? 0 }))
                }
                pause = min(pause, left)
            }
            var nothing: [pollfd] = []
            // A poll on nothing is a sleep with nanosecond resolution.
            _ = try? Posix.poll(&nothing, timeout: pause)
        }
    }

    private func checkSignalOffset(_ offset: UInt32) throws(IVClientError) {
        guard offset != 0, offset % 4 == 0, Int(offset) <= memory.count - 4 else {
            throw error(.invalidArgument("signal offset \(offset) is not a non-zero, 4-byte aligned word of the region's \(memory.count) bytes"))
        }
    }

    // MARK: futex

    /// FUTEX_WAIT on the region word at `offset`; see `RegionMemory.wait`.
    public func wait(offset: UInt32, expected: UInt32, timeout: Duration?) throws(IVClientError) -> FutexWaitResult {
        try memory.wait(offset: Int(offset), expected: expected, timeout: timeout)
    }

    /// FUTEX_WAKE of every waiter on the region word at `offset`.
    @discardableResult
    public func wake(offset: UInt32) throws(IVClientError) -> Int {
        try memory.wake(offset: Int(offset))
    }
}

/// Who the VM attached to a server is (`RegionConnection.attachedVM`).
public typealias AttachedVM = HALDProtocol.VMInfo
