/// A size as QEMU's ivshmem-server takes it: bytes, or with a K, M, G or T
/// suffix (powers of 1024; "4M", "1G", "512k"). Pure.
public enum MemorySize {
    public static func parse(_ text: String) -> UInt64? {
        guard let last = text.last else { return nil }
        let shifts: [Character: UInt64] = ["k": 10, "K": 10, "m": 20, "M": 20, "g": 30, "G": 30, "t": 40, "T": 40]
        var digits = Substring(text)
        var shift: UInt64 = 0
        if let suffix = shifts[last] {
            shift = suffix
            digits = digits.dropLast()
        } else if last == "b" || last == "B" {
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits), value > 0 else { return nil }
        guard value <= UInt64.max >> shift else { return nil }
        return value << shift
    }

    /// The binary units, largest first, as shifts (TiB is 1 << 40). A
    /// switch, not an array literal of (shift, name) pairs: the optimizer
    /// scheduled that literal's stores in either of two orders from one
    /// build to the next (measured: MemorySize.swift.o differed in 2 of 6
    /// builds of one tree), and the .deb must be the same bytes every time.
    private static let shifts: [UInt64] = [40, 30, 20, 10]

    private static func unit(_ shift: UInt64) -> String {
        switch shift {
        case 40: return "TiB"
        case 30: return "GiB"
        case 20: return "MiB"
        default: return "KiB"
        }
    }

    /// "4 MiB", "1 GiB", "12345 bytes": for messages.
    public static func describe(_ bytes: UInt64) -> String {
        for shift in shifts where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift) \(unit(shift))"
        }
        return "\(bytes) bytes"
    }

    /// "512 MiB", "3.9 MiB", "12 KiB", "100 bytes": a size a reader takes in
    /// at a glance, exact when it is a whole number of its unit.
    public static func approximate(_ bytes: UInt64) -> String {
        for shift in shifts where bytes >= 1 << shift {
            if bytes % (1 << shift) == 0 { return "\(bytes >> shift) \(unit(shift))" }
            let tenths = (bytes * 10 + (1 << shift) / 2) >> shift
            return "\(tenths / 10).\(tenths % 10) \(unit(shift))"
        }
        return "\(bytes) bytes"
    }

    /// "4190208 bytes (4.0 MiB)": exact, and at a glance.
    public static func both(_ bytes: UInt64) -> String {
        let glance = approximate(bytes)
        return glance.hasSuffix(" bytes") ? glance : "\(bytes) bytes (\(glance))"
    }
}
