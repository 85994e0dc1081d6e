import WireFormat
import LinuxSystem
@testable import ServerCore
import Glibc
import Testing
@testable import IVServer

@Suite("Log text")
struct LogTextTests {
    func libc(_ seconds: Int) -> UTCTime {
        var value = seconds
        var parts = tm()
        gmtime_r(&value, &parts)
        return UTCTime(year: Int(parts.tm_year) + 1900, month: Int(parts.tm_mon) + 1, day: Int(parts.tm_mday),
                       hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec))
    }

    @Test("UTC calendar time agrees with gmtime, leap days and centuries included")
    func utcTime() {
        var generator = SystemRandomNumberGenerator()
        let fixed = [0, -1, 59, 86_399, 86_400, 951_782_400 /* 2000-02-29 */, 951_868_800, 4_107_542_400 /* 2100-03-01 */,
                     1_764_079_456, -2_208_988_800 /* 1900-01-01 */, 253_402_300_799 /* 9999-12-31T23:59:59 */]
        for seconds in fixed + (0..<20_000).map({ _ in Int.random(in: -4_000_000_000...20_000_000_000, using: &generator) }) {
            #expect(UTCTime(secondsSinceEpoch: seconds) == libc(seconds), "\(seconds)")
        }
    }

    @Test("a line starts with the UTC time, the level and the label")
    func linePrefix() {
        var text = LogText()
        text.beginLine(level: "info", label: "ivserver", second: 1_764_079_456)
        text.append("x")
        #expect(text.string == "2025-11-25T14:04:16Z info ivserver: x")
        var early = LogText()
        early.appendTimestamp(0)
        #expect(early.string == "1970-01-01T00:00:00Z")
    }

    @Test("integers, peers and UTF-8 text are appended as bytes")
    func appends() {
        var text = LogText()
        text.append(0); text.append(" "); text.append(-42); text.append(" "); text.append(UInt64.max)
        text.append(" "); text.append(Int64.min); text.append(" é "); text.append(PeerCredentials(pid: 7, uid: 0, gid: 1))
        text.append(" "); text.append(nil as PeerCredentials?)
        #expect(text.string == "0 -42 18446744073709551615 -9223372036854775808 é pid 7 uid 0 gid 1 unknown peer")
    }
}
