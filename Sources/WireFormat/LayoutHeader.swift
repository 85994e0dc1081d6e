/// The binary vSoC 2.0 header at the start of the shared memory: a 16-byte
/// layout descriptor, then one 60-byte region descriptor per region, all
/// little-endian (docs/layout.md, "Binary structures"). The server writes
/// it, the guest driver and every host client read it, so this file is the
/// one definition of the ABI both sides of this package use. Pure: bytes in,
/// values out.

/// Where one signal table sits inside its region (offsets relative to the
/// region's begin).
public struct SignalTableLayout: Equatable, Sendable {
    public var nodesLg2: UInt32
    /// Start of the 2^nodesLg2 u32 entries ("futex_uaddr_table_offset").
    public var tableOffset: UInt32
    /// The word set to 1 when the table has news ("interrupt_signalled_offset").
    public var signalledOffset: UInt32

    public init(nodesLg2: UInt32, tableOffset: UInt32, signalledOffset: UInt32) {
        self.nodesLg2 = nodesLg2
        self.tableOffset = tableOffset
        self.signalledOffset = signalledOffset
    }

    public var nodeCount: UInt32 { 1 << nodesLg2 }
}

/// One region descriptor, as the header stores it.
public struct RegionDescriptor: Equatable, Sendable {
    public var currentVersion: UInt16
    public var minCompatibleVersion: UInt16
    /// Absolute, page aligned.
    public var beginOffset: UInt32
    /// Absolute, begin + region size (not padded).
    public var endOffset: UInt32
    /// Relative to the region's begin: where the signal tables end.
    public var dataOffset: UInt32
    public var guestToHost: SignalTableLayout
    public var hostToGuest: SignalTableLayout
    public var name: String
    /// Index of the managing region; 0 when unmanaged.
    public var managedByIndex: UInt32

    public init(currentVersion: UInt16, minCompatibleVersion: UInt16, beginOffset: UInt32, endOffset: UInt32,
                dataOffset: UInt32, guestToHost: SignalTableLayout, hostToGuest: SignalTableLayout,
                name: String, managedByIndex: UInt32) {
        self.currentVersion = currentVersion
        self.minCompatibleVersion = minCompatibleVersion
        self.beginOffset = beginOffset
        self.endOffset = endOffset
        self.dataOffset = dataOffset
        self.guestToHost = guestToHost
        self.hostToGuest = hostToGuest
        self.name = name
        self.managedByIndex = managedByIndex
    }

    public var size: UInt32 { endOffset &- beginOffset }
}

/// What a reader found wrong with a header.
public struct HeaderError: Error, Equatable, Sendable, CustomStringConvertible {
    public var problems: [String]

    public init(problems: [String]) { self.problems = problems }

    public var description: String { problems.joined(separator: "; ") }
}

/// The whole header.
public struct LayoutHeader: Equatable, Sendable {
    public static let majorVersion: UInt16 = 2
    public static let minorVersion: UInt16 = 0
    public static let layoutDescriptorSize = 16
    public static let regionDescriptorSize = 60
    /// device_name: 16 bytes, NUL-terminated, so at most 15 bytes of name.
    public static let nameFieldSize = 16
    /// The largest table whose u32 offsets cannot overflow.
    public static let maximumNodesLg2: UInt32 = 29

    public var majorVersion: UInt16
    public var minorVersion: UInt16
    /// Total size of the shared memory.
    public var size: UInt32
    /// Where the region descriptors start (16 when written by ivserver).
    public var descriptorOffset: UInt32
    public var regions: [RegionDescriptor]

    public init(size: UInt32, regions: [RegionDescriptor]) {
        majorVersion = Self.majorVersion
        minorVersion = Self.minorVersion
        self.size = size
        descriptorOffset = UInt32(Self.layoutDescriptorSize)
        self.regions = regions
    }

    public static func encodedSize(regionCount: Int) -> Int {
        layoutDescriptorSize + regionDescriptorSize * regionCount
    }

    /// The region with that name, if any.
    public func region(named name: String) -> (index: Int, descriptor: RegionDescriptor)? {
        regions.firstIndex { $0.name == name }.map { ($0, regions[$0]) }
    }

    // MARK: writing

    /// The header bytes: 16 + 60 × regions.count.
    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.encodedSize(regionCount: regions.count))
        out.appendLittleEndian(majorVersion)
        out.appendLittleEndian(minorVersion)
        out.appendLittleEndian(size)
        out.appendLittleEndian(UInt32(regions.count))
        out.appendLittleEndian(descriptorOffset)
        for region in regions {
            out.appendLittleEndian(region.currentVersion)
            out.appendLittleEndian(region.minCompatibleVersion)
            out.appendLittleEndian(region.beginOffset)
            out.appendLittleEndian(region.endOffset)
            out.appendLittleEndian(region.dataOffset)
            for table in [region.guestToHost, region.hostToGuest] {
                out.appendLittleEndian(table.nodesLg2)
                out.appendLittleEndian(table.tableOffset)
                out.appendLittleEndian(table.signalledOffset)
            }
            let name = region.name.utf8.prefix(Self.nameFieldSize - 1)
            out += name
            out += repeatElement(0, count: Self.nameFieldSize - name.count)  // NUL-terminated, NUL-padded
            out.appendLittleEndian(region.managedByIndex)
        }
        return out
    }

    // MARK: reading

    /// From the first 16 bytes: how many bytes from offset 0 hold the whole
    /// header. Throws when the descriptor itself is unusable (wrong major
    /// version, descriptors outside the file).
    public static func encodedLength(descriptorBytes bytes: some Collection<UInt8>, fileSize: UInt64) throws(HeaderError) -> Int {
        let bytes = Array(bytes)
        guard bytes.count >= layoutDescriptorSize else {
            throw HeaderError(problems: ["the shared memory is \(bytes.count) bytes, too short for the 16-byte layout descriptor"])
        }
        var reader = LittleEndianReader(bytes)
        let (major, minor, size, count, offset) = reader.layoutDescriptor()
        guard major == majorVersion else {
            throw HeaderError(problems: ["layout version \(major).\(minor) is not supported (expected \(majorVersion).x)"])
        }
        let end = UInt64(offset) + UInt64(count) * UInt64(regionDescriptorSize)
        var problems: [String] = []
        if UInt64(size) > fileSize {
            problems.append("the layout says the shared memory is \(size) bytes but the file has \(fileSize)")
        }
        if offset < layoutDescriptorSize {
            problems.append("region descriptors start at \(offset), inside the 16-byte layout descriptor")
        }
        if end > min(fileSize, UInt64(size)) {
            problems.append("\(count) region descriptors at offset \(offset) end at \(end), beyond the shared memory (\(min(fileSize, UInt64(size))) bytes)")
        }
        guard problems.isEmpty else { throw HeaderError(problems: problems) }
        return Int(end)
    }

    /// Decodes and checks a whole header (`bytes` from offset 0, at least
    /// `encodedLength` of them) against the file's size: every region and
    /// signal table must lie inside the file. Every problem is reported.
    public static func decode(_ bytes: some Collection<UInt8>, fileSize: UInt64) throws(HeaderError) -> LayoutHeader {
        let bytes = Array(bytes)
        let length = try encodedLength(descriptorBytes: bytes, fileSize: fileSize)
        guard bytes.count >= length else {
            throw HeaderError(problems: ["the header needs \(length) bytes, only \(bytes.count) were read"])
        }
        var reader = LittleEndianReader(bytes)
        let (major, minor, size, count, offset) = reader.layoutDescriptor()
        reader.position = Int(offset)
        var regions: [RegionDescriptor] = []
        var problems: [String] = []
        for index in 0..<Int(count) {
            let currentVersion: UInt16 = reader.next()
            let minCompatible: UInt16 = reader.next()
            let begin: UInt32 = reader.next()
            let end: UInt32 = reader.next()
            let data: UInt32 = reader.next()
            let guestToHost = SignalTableLayout(nodesLg2: reader.next(), tableOffset: reader.next(), signalledOffset: reader.next())
            let hostToGuest = SignalTableLayout(nodesLg2: reader.next(), tableOffset: reader.next(), signalledOffset: reader.next())
            let field = reader.bytes(nameFieldSize)
            let name = String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
            let managedBy: UInt32 = reader.next()
            let region = RegionDescriptor(
                currentVersion: currentVersion, minCompatibleVersion: minCompatible, beginOffset: begin, endOffset: end,
                dataOffset: data, guestToHost: guestToHost, hostToGuest: hostToGuest, name: name, managedByIndex: managedBy)
            problems += Self.problems(of: region, index: index, regionCount: Int(count), limit: min(fileSize, UInt64(size)))
            regions.append(region)
        }
        guard problems.isEmpty else { throw HeaderError(problems: problems) }
        var header = LayoutHeader(size: size, regions: regions)
        header.majorVersion = major
        header.minorVersion = minor
        header.descriptorOffset = offset
        return header
    }

    /// The bounds a reader relies on before it maps or touches a region.
    static func problems(of region: RegionDescriptor, index: Int, regionCount: Int, limit: UInt64) -> [String] {
        let subject = "region #\(index) '\(region.name)'"
        var problems: [String] = []
        guard region.beginOffset <= region.endOffset, UInt64(region.endOffset) <= limit else {
            return ["\(subject) spans \(region.beginOffset)..<\(region.endOffset), outside the shared memory (\(limit) bytes)"]
        }
        let size = UInt64(region.size)
        if region.name.isEmpty { problems.append("region #\(index) has an empty name") }
        if UInt64(region.dataOffset) > size {
            problems.append("\(subject): data offset \(region.dataOffset) is beyond the region's \(size) bytes")
        }
        for (label, table) in [("guest_to_host", region.guestToHost), ("host_to_guest", region.hostToGuest)] {
            guard table.nodesLg2 <= maximumNodesLg2 else {
                problems.append("\(subject): \(label) table has 2^\(table.nodesLg2) nodes")
                continue
            }
            let tableEnd = UInt64(table.tableOffset) + 4 * UInt64(table.nodeCount)
            if tableEnd > size || UInt64(table.signalledOffset) + 4 > size {
                problems.append("\(subject): \(label) table or its signal word lies outside the region's \(size) bytes")
            }
            if table.tableOffset % 4 != 0 || table.signalledOffset % 4 != 0 {
                problems.append("\(subject): \(label) table offsets are not 4-byte aligned")
            }
        }
        if region.managedByIndex >= regionCount {
            problems.append("\(subject): managed_by index \(region.managedByIndex) is not a region (there are \(regionCount))")
        }
        return problems
    }
}

/// Reads little-endian integers from a byte array; the caller has checked
/// the length.
struct LittleEndianReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func next<T: FixedWidthInteger>() -> T {
        defer { position += MemoryLayout<T>.size }
        return T(littleEndianBytes: bytes[position..<position + MemoryLayout<T>.size])!
    }

    /// The 16-byte layout descriptor's fields, in order.
    mutating func layoutDescriptor() -> (major: UInt16, minor: UInt16, size: UInt32, count: UInt32, descriptorOffset: UInt32) {
        (next(), next(), next(), next(), next())
    }

    mutating func bytes(_ count: Int) -> ArraySlice<UInt8> {
        defer { position += count }
        return bytes[position..<position + count]
    }
}

extension Array where Element == UInt8 {
    /// Appends `value` as little-endian bytes.
    public mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        for _ in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: v))
            v >>= 8
        }
    }
}

extension FixedWidthInteger {
    /// The value of `bytes`, least significant first; nil unless there are
    /// exactly as many as the type has (the protocols' integers on the wire).
    public init?<Bytes: Collection<UInt8>>(littleEndianBytes bytes: Bytes) {
        guard bytes.count == MemoryLayout<Self>.size else { return nil }
        self = bytes.reversed().reduce(Self.zero) { $0 << 8 | Self(truncatingIfNeeded: $1) }
    }
}
