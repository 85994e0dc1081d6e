import LinuxSystem
@testable import ServerCore
@testable import WireFormat
import Testing
@testable import IVServer

@Suite("JSON reader")
struct JSONReaderTests {
    @Test("values of every kind")
    func values() throws {
        let value = try JSONReader.parse(Array(#" { "a": [1, -2.5e3, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"], "b": {} } "#.utf8))
        #expect(value == .object([
            ("a", .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null, .string("x\"\\/\u{8}\u{c}\n\r\té😀")])),
            ("b", .object([])),
        ]))
    }

    @Test("malformed input is rejected with a position", arguments: [
        ("{", "line 1, column 2: unexpected end of input, expected a member name in double quotes"),
        ("[1,]", "line 1, column 4: unexpected ']', expected a value"),
        ("01", "line 1, column 2: unexpected '1' after the document"),
        ("-", "line 1, column 2: expected a digit in number"),
        ("1.", "line 1, column 3: expected a digit after the decimal point"),
        ("\"\\x\"", "line 1, column 3: invalid escape sequence \\'x'"),
        ("\"\\ud800\"", "line 1, column 8: unpaired surrogate in \\u escape"),
        ("\"a\nb\"", "line 1, column 3: control character U+000A in a string must be escaped"),
        ("tru", "line 1, column 1: unexpected 't', expected a value"),
        ("\"abc", "line 1, column 1: unterminated string"),
        ("\n\n  @", "line 3, column 3: unexpected '@', expected a value"),
        ("{\"é\": 1 x}", "line 1, column 9: unexpected 'x', expected ',' or '}'"),
    ])
    func malformed(input: String, message: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONReader.parse(Array(input.utf8)) }
        do {
            _ = try JSONReader.parse(Array(input.utf8))
        } catch {
            #expect(error.description == message)
        }
    }

    @Test("invalid UTF-8 in a string is rejected")
    func invalidUTF8() {
        #expect(throws: JSONSyntaxError(line: 1, column: 1, message: "string is not valid UTF-8")) {
            try JSONReader.parse([0x22, 0xFF, 0x22])
        }
    }

    @Test("nesting is bounded")
    func depthLimit() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONReader.parse(Array(ok.utf8))
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: JSONSyntaxError(line: 1, column: 65, message: "nesting deeper than 64 levels")) {
            try JSONReader.parse(Array(deep.utf8))
        }
    }
}
