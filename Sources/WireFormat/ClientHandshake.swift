
/// The host-client (HALD) handshake, version 0, as a pure state machine:
/// bytes in, a decision out. No I/O here; `ClientConnection` does the
/// sending. Spec: docs/protocols.md §2.
///
///     1. server → client: u32 protocol version (0)          `greeting`
///     2. client → server: i16 name length (1...16), name    `receive(_:)`
///     3. server → client: u64 0 carrying 3 fds              `.grant(region:)`
///     4. server closes; a bad length, unknown name or early close ends
///        in a close with no fds                             `.refuse(_:)`
public struct ClientHandshake: Sendable {
    public static let protocolVersion = HALDProtocol.version
    public static let maximumNameLength = HALDProtocol.nameLengths.upperBound

    /// Step 1's bytes, sent as soon as a client is accepted.
    public static let greeting = HALDProtocol.greeting

    /// Step 3's payload; the fds travel with it.
    public static let grantPayload = HALDProtocol.grantPayload

    private static let queries: [(name: [UInt8], query: Query)] = [
        (Array(HALDProtocol.statusRequestName.utf8), .status),
        (Array(HALDProtocol.vmInfoRequestName.utf8), .vmInfo),
        (Array(HALDProtocol.layoutRequestName.utf8), .layout),
    ]

    /// ivserver's requests that name no region (16 bytes, where a region
    /// name has 15 at most).
    public enum Query: Equatable, Sendable {
        /// The server's state as text.
        case status
        /// Who the attached VM is (`HALDProtocol.VMInfo`).
        case vmInfo
        /// The layout header (`HALDProtocol.LayoutAnswer`).
        case layout
    }

    public enum Refusal: Equatable, Sendable, CustomStringConvertible {
        case badNameLength(Int16)
        case unknownRegion(String)
        case closedEarly(receivedBytes: Int)

        public var description: String {
            switch self {
            case let .badNameLength(length):
                return "bad region name length \(length) (must be 1...\(ClientHandshake.maximumNameLength))"
            case let .unknownRegion(name):
                return "unknown region \(name)"
            case let .closedEarly(received):
                return "client closed the connection after \(received) of the handshake's bytes"
            }
        }
    }

    public enum Decision: Equatable, Sendable {
        /// Not enough bytes yet.
        case needMoreInput
        /// Send the region's fds (step 3), then close.
        case grant(region: Int)
        /// ivserver's extension: send the answer to `Query` as text, then
        /// close (the name was `HALDProtocol.statusRequestName` or
        /// `vmInfoRequestName`).
        case query(Query)
        /// Close without sending any fd.
        case refuse(Refusal)
    }

    private enum State: Sendable {
        case awaitingLength(received: [UInt8])
        case awaitingName(length: Int, received: [UInt8])
        case finished(Decision)
    }

    /// The layout's region names as bytes, looked up without building a
    /// String (built once per server, shared by every handshake).
    public struct RegionNames: Sendable {
        private let names: [(utf8: [UInt8], index: Int)]

        public init(indexByName: [String: Int]) {
            names = indexByName.map { (Array($0.key.utf8), $0.value) }
        }

        /// The region whose name is exactly these bytes (no Unicode
        /// normalisation: the protocol compares bytes).
        public func index(of name: ArraySlice<UInt8>) -> Int? {
            let count = name.count
            return names.first { $0.utf8.count == count && Self.sameBytes($0.utf8, name) }?.index
        }

        /// Two byte runs of the same length, compared by index (the
        /// iterator-based `elementsEqual` cost twice as much per handshake).
        private static func sameBytes(_ stored: [UInt8], _ name: ArraySlice<UInt8>) -> Bool {
            var position = name.startIndex
            for byte in stored {
                if name[position] != byte { return false }
                position += 1
            }
            return true
        }
    }

    private var state: State = .awaitingLength(received: [])
    private var bytesReceived = 0
    private let regions: RegionNames

    public init(regions: RegionNames) {
        self.regions = regions
    }

    public init(regionIndexByName: [String: Int]) {
        self.init(regions: RegionNames(indexByName: regionIndexByName))
    }

    /// The decision once one has been made, else nil.
    public var decision: Decision? {
        if case let .finished(decision) = state { return decision }
        return nil
    }

    /// Feeds bytes as they arrive, in pieces of any size. Once a decision is
    /// made it is final; later bytes are ignored (the server closes anyway).
    ///
    /// Concrete, not generic over the collection: a generic function of
    /// this module runs unspecialized in the server's (a module boundary),
    /// which cost it 20,000 instructions per handshake.
    public mutating func receive(_ bytes: ArraySlice<UInt8>) -> Decision {
        bytesReceived += bytes.count
        var input = bytes
        // The usual case: the whole request in one read, decided without
        // copying it into the state (the loop below decides the same).
        if case let .awaitingLength(received) = state, received.isEmpty, input.count >= 2 {
            let length = Int(Self.nameLength(input.first!, input.dropFirst().first!))
            if (1...Self.maximumNameLength).contains(length), input.count >= 2 + length {
                let decision = decision(forName: input.dropFirst(2).prefix(length))
                state = .finished(decision)
                return decision
            }
        }
        while true {
            switch state {
            case let .finished(decision):
                return decision
            case var .awaitingLength(received):
                let wanted = 2 - received.count
                received += input.prefix(wanted)
                input = input.dropFirst(wanted)
                guard received.count == 2 else {
                    state = .awaitingLength(received: received)
                    return .needMoreInput
                }
                let length = Self.nameLength(received[0], received[1])
                if length < 1 || Int(length) > Self.maximumNameLength {
                    state = .finished(.refuse(.badNameLength(length)))
                } else {
                    state = .awaitingName(length: Int(length), received: [])
                }
            case .awaitingName(let length, var received):
                let wanted = length - received.count
                received += input.prefix(wanted)
                input = input.dropFirst(wanted)
                guard received.count == length else {
                    state = .awaitingName(length: length, received: received)
                    return .needMoreInput
                }
                state = .finished(decision(forName: received[...]))
            }
        }
    }

    /// `receive` for a whole array (tests, the fuzzer).
    public mutating func receive(_ bytes: [UInt8]) -> Decision {
        receive(bytes[...])
    }

    /// Step 2: the i16 name length, little-endian.
    private static func nameLength(_ low: UInt8, _ high: UInt8) -> Int16 {
        Int16(bitPattern: UInt16(low) | UInt16(high) << 8)
    }

    /// Step 2: the name itself, no NUL, compared byte for byte.
    private func decision(forName name: ArraySlice<UInt8>) -> Decision {
        if let index = regions.index(of: name) {
            return .grant(region: index)
        }
        if let query = Self.queries.first(where: { $0.name.count == name.count && name.elementsEqual($0.name) }) {
            return .query(query.query)
        }
        return .refuse(.unknownRegion(Self.printable(Array(name))))
    }

    /// The client closed its side. Before a decision that is a refusal.
    public mutating func receiveEndOfStream() -> Decision {
        if case let .finished(decision) = state { return decision }
        let decision = Decision.refuse(.closedEarly(receivedBytes: bytesReceived))
        state = .finished(decision)
        return decision
    }

    /// A quoted, escaped rendering of untrusted name bytes, for logs.
    static func printable(_ bytes: [UInt8]) -> String {
        var text = "'"
        for byte in bytes {
            if (0x20...0x7E).contains(byte) && byte != UInt8(ascii: "'") && byte != UInt8(ascii: "\\") {
                text.append(Character(Unicode.Scalar(byte)))
            } else {
                text += "\\x" + hexDigits(byte, minimumWidth: 2)
            }
        }
        return text + "'"
    }
}
