import LinuxSystem
import WireFormat
import IVClient

/// What ivctl prints, through IVClient's unbuffered streams.
enum Output {
    static func text(_ text: String) {
        StandardStream.output.write(text)
    }

    static func lines(_ lines: [String]) {
        guard !lines.isEmpty else { return }
        StandardStream.output.write(lines.joined(separator: "\n") + "\n")
    }

    static func error(_ line: String) {
        StandardStream.error.write(line + "\n")
    }
}

/// `hexdump -C` lines for a stream of bytes: offset, 16 bytes in two
/// groups, the printable characters; a run of lines equal to the previous
/// one becomes a single '*'. Pure.
struct HexDump {
    private var offset: Int
    private var pending: [UInt8] = []
    private var previous: [UInt8]?
    private var squeezing = false

    init(startOffset: Int) { offset = startOffset }

    /// The lines complete after `bytes`.
    mutating func feed(_ bytes: some Collection<UInt8>) -> String {
        var out = ""
        pending += bytes
        var index = 0
        while pending.count - index >= 16 {
            out += line(Array(pending[index..<index + 16]))
            index += 16
        }
        pending.removeFirst(index)
        return out
    }

    /// The last partial line and the final offset.
    mutating func finish() -> String {
        var out = pending.isEmpty ? "" : line(pending, force: true)
        pending = []
        out += hexDigits(offset, minimumWidth: 8) + "\n"
        return out
    }

    private mutating func line(_ bytes: [UInt8], force: Bool = false) -> String {
        defer { offset += bytes.count }
        if !force && bytes == previous {
            if squeezing { return "" }
            squeezing = true
            return "*\n"
        }
        previous = bytes
        squeezing = false
        var text = hexDigits(offset, minimumWidth: 8) + " "
        for column in 0..<16 {
            if column == 8 { text += " " }
            text += column < bytes.count ? " " + hexDigits(bytes[column], minimumWidth: 2) : "   "
        }
        text += "  |" + String(decoding: bytes.map { (0x20..<0x7F).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self) + "|\n"
        return text
    }
}
