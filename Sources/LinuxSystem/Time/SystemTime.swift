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

    /// Seconds since the epoch, from the real-time clock.
    public static func currentSecond() -> Int {
        var now = Glibc.timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now.tv_sec
    }
}
