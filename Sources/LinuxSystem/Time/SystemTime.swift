import Glibc

/// Time as the system calls take it: every Duration conversion is here.
public enum SystemTime {
    /// `duration` (at least zero) as a timespec.
    public static func timespec(_ duration: Duration) -> Glibc.timespec {
        let (seconds, attoseconds) = max(duration, .zero).components
        return Glibc.timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
    }

    /// `duration` as a timeval, at least a microsecond (a zero timeval means
    /// "no timeout" to SO_RCVTIMEO and friends).
    public static func timeval(atLeastAMicrosecond duration: Duration) -> Glibc.timeval {
        let (seconds, attoseconds) = max(duration, .zero).components
        var value = Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        if value.tv_sec == 0 && value.tv_usec == 0 { value.tv_usec = 1 }
        return value
    }

    /// `duration` in whole milliseconds, rounded up (a wait is never shorter
    /// than asked), at most Int32.max (poll's limit).
    public static func milliseconds(roundingUp duration: Duration) -> Int32 {
        let (seconds, attoseconds) = max(duration, .zero).components
        let total = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: total)
    }

    /// `duration` in nanoseconds (at least zero, saturating).
    public static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = max(duration, .zero).components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : scaled &+ attoseconds / 1_000_000_000
    }

    /// A number of seconds as a command line gives it, in whole
    /// milliseconds rounded up (a timeout is never shorter than asked),
    /// from 0 to Int64.max: the one rule by which seconds become time.
    public static func milliseconds(seconds: Double) -> Int64 {
        let milliseconds = (seconds * 1000).rounded(.up)
        guard milliseconds < Double(Int64.max) else { return .max }
        return milliseconds > 0 ? Int64(milliseconds) : 0
    }

    /// A number of seconds as a Duration, by the rule of `milliseconds(seconds:)`.
    public static func duration(seconds: Double) -> Duration {
        .milliseconds(milliseconds(seconds: seconds))
    }

    /// Seconds since the epoch, from the real-time clock.
    public static func currentSecond() -> Int {
        var now = Glibc.timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now.tv_sec
    }
}
