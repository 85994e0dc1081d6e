import Glibc
import Testing
@testable import LinuxSystem

@Suite("System time: every conversion the calls take")
struct SystemTimeTests {
    @Test("seconds from a command line become whole milliseconds, rounded up, never negative, saturating")
    func secondsToMilliseconds() {
        #expect(SystemTime.milliseconds(seconds: 0) == 0)
        #expect(SystemTime.milliseconds(seconds: 1) == 1000)
        #expect(SystemTime.milliseconds(seconds: 0.0001) == 1, "a timeout is never shorter than asked")
        #expect(SystemTime.milliseconds(seconds: 2.5) == 2500)
        #expect(SystemTime.milliseconds(seconds: 86400) == 86_400_000)
        #expect(SystemTime.milliseconds(seconds: -3) == 0)
        #expect(SystemTime.milliseconds(seconds: 1e300) == Int64.max)
        #expect(SystemTime.duration(seconds: 0.25) == .milliseconds(250))
        #expect(SystemTime.duration(seconds: 0.0005) == .milliseconds(1))
    }

    @Test("durations as timespec, timeval, poll's milliseconds and nanoseconds")
    func durations() {
        let spec = SystemTime.timespec(.milliseconds(1500))
        #expect(spec.tv_sec == 1 && spec.tv_nsec == 500_000_000)
        #expect(SystemTime.timespec(.seconds(-1)).tv_sec == 0, "never negative")
        let zero = SystemTime.timeval(atLeastAMicrosecond: .zero)
        #expect(zero.tv_sec == 0 && zero.tv_usec == 1, "a zero timeval would mean no timeout")
        let val = SystemTime.timeval(atLeastAMicrosecond: .microseconds(2_000_003))
        #expect(val.tv_sec == 2 && val.tv_usec == 3)
        #expect(SystemTime.milliseconds(roundingUp: .nanoseconds(1)) == 1)
        #expect(SystemTime.milliseconds(roundingUp: .milliseconds(7)) == 7)
        #expect(SystemTime.milliseconds(roundingUp: .seconds(Int64(Int32.max))) == Int32.max, "clamped to poll's limit")
        #expect(SystemTime.nanoseconds(.microseconds(3)) == 3000)
        #expect(SystemTime.nanoseconds(.seconds(Int64.max)) == Int64.max, "saturating")
        #expect(SystemTime.nanoseconds(.seconds(-5)) == 0)
    }
}
