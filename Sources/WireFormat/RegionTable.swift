/// The region table people read: `ivserver layout` prints it for a layout
/// file, `ivctl regions` for the live shared memory. Pure.
public enum RegionTable {
    public static func rows(_ header: LayoutHeader) -> [[String]] {
        var rows = [["#", "name", "begin", "end", "size", "g2h table", "g2h word", "h2g table", "h2g word", "data", "managed by"]]
        for (index, region) in header.regions.enumerated() {
            let manager = region.managedByIndex == 0 ? "-" : header.regions[Int(region.managedByIndex)].name
            rows.append([
                "\(index)", region.name, hex0x(region.beginOffset), hex0x(region.endOffset), "\(region.size)",
                "\(region.guestToHost.tableOffset)", "\(region.guestToHost.signalledOffset)",
                "\(region.hostToGuest.tableOffset)", "\(region.hostToGuest.signalledOffset)",
                "\(region.dataOffset)", manager,
            ])
        }
        return rows
    }

    /// The rows as lines, columns padded, no trailing spaces.
    public static func lines(_ header: LayoutHeader) -> [String] {
        let rows = rows(header)
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            var line = zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            return line
        }
    }

    public static let offsetsNote = "offsets of tables, words and data are relative to the region's begin"
}

public func hex0x<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// Lower-case hex digits of `value`, zero-padded to at least `minimumWidth`
/// ("0a" for a byte, "fd:01" device numbers in /proc, "\x1b" escapes).
public func hexDigits<T: BinaryInteger>(_ value: T, minimumWidth: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= minimumWidth ? digits : String(repeating: "0", count: minimumWidth - digits.count) + digits
}
