import LinuxSystem
import ArgumentParser
import IVClient

/// What `ivctl write` and `ivctl peer write` put in the memory: the DATA
/// argument as text, or as hex with --hex, or standard input when there is
/// no argument.
struct WriteInput: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp("First byte to write, relative to the region's begin for ivctl write (default: 0).", valueName: "n"), transform: ByteValue.parse)
    var offset = ByteValue(0)

    @Flag(help: "DATA (or standard input) is hex digits, two a byte; spaces and newlines between bytes are ignored.")
    var hex = false

    @Argument(help: ArgumentHelp("The bytes to write, as text (UTF-8); without it, standard input.", valueName: "data"))
    var data: String?

    /// The bytes, read from the argument or standard input (as much as
    /// `room` bytes, the room from the offset to the memory's end, can
    /// take: more is refused by `range` as for an argument).
    func bytes(room: Int) throws -> [UInt8] {
        let raw: [UInt8]
        if let data {
            raw = Array(data.utf8)
        } else {
            do {
                raw = try StandardStream.readInput(maximum: max(16 << 20, (hex ? 3 : 1) * room + 1))
            } catch {
                Output.error("ivctl: cannot read standard input: \(error)")
                throw Exit.failure
            }
        }
        guard hex else { return raw }
        guard let decoded = Self.hexBytes(raw) else {
            Output.error("ivctl: --hex wants pairs of hex digits (0-9, a-f), optionally separated by spaces")
            throw Exit.usage
        }
        return decoded
    }

    /// "de ad be ef" or "deadbeef" as bytes; nil for anything else.
    static func hexBytes(_ text: [UInt8]) -> [UInt8]? {
        let digits = text.filter { ![UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"), UInt8(ascii: "\r")].contains($0) }
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var index = 0
        while index < digits.count {
            guard let byte = UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
            index += 2
        }
        return bytes
    }

    /// The range to write in memory of `size` bytes, or a usage error naming `what`.
    func range(count: Int, in size: Int, what: String) throws -> Int {
        let start = offset.value
        guard start <= size, count <= size - start else {
            Output.error("ivctl: bytes \(start)..<\(start + count) are outside \(what) (\(size) bytes)")
            throw Exit.usage
        }
        return start
    }
}

struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write bytes into a region (text, hex, or standard input), through the shared memory.",
        discussion: """
            The bytes go straight into the memory the guest sees (its BAR2): nothing is \
            signalled. Offsets outside the region are refused (exit 64), as for dump.
            """)

    @OptionGroup var server: ServerOptions

    @Argument(help: "The region's name.")
    var region: String

    @OptionGroup var input: WriteInput

    func run() throws {
        let connection = try server.open(region)
        let bytes = try input.bytes(room: Int(connection.descriptor.size) - min(input.offset.value, Int(connection.descriptor.size)))
        let start = try input.range(count: bytes.count, in: Int(connection.descriptor.size), what: "region '\(region)'")
        try report { () throws(IVClientError) in
            // Pages first: on a full filesystem, an error rather than a SIGBUS mid-write.
            try connection.memory.reserve(offset: start, count: bytes.count)
            try connection.memory.write(bytes, offset: start)
        }
        Output.lines(["wrote \(bytes.count) bytes at offset \(start) of region '\(region)'"])
    }
}

struct PeerWrite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write",
        abstract: "Write bytes into the shared memory (text, hex, or standard input).",
        discussion: "Nothing is signalled. Offsets outside the memory are refused (exit 64), as for dump.")

    @OptionGroup var server: PeerServerOptions

    @OptionGroup var input: WriteInput

    func run() throws {
        let peer = try server.join()
        let bytes = try input.bytes(room: peer.memory.count - min(input.offset.value, peer.memory.count))
        let start = try input.range(count: bytes.count, in: peer.memory.count, what: "the shared memory")
        try reportPeer { () throws(IVClientError) in
            try peer.memory.reserve(offset: start, count: bytes.count)
            try peer.memory.write(bytes, offset: start)
        }
        Output.lines(["wrote \(bytes.count) bytes at offset \(start) of the shared memory"])
    }
}
