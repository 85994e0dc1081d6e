import WireFormat
/// Turns layout JSON into a `LayoutSpec`, checking presence, type and range
/// of every field. Semantic rules (sizes, names, managed_by) belong to
/// `LayoutPlanner`; `LayoutLoader` runs both so one pass reports everything.
public enum LayoutDecoder {
    static let regionsKey = "vsoc_device_regions"
    /// An array, not a Set: seven names, and a Set's first use costs a
    /// run-time conformance lookup at start-up.
    static let regionKeys = [
        "device_name", "current_version", "min_compatible_version", "region_size", "managed_by",
        "guest_to_host_signal_table", "host_to_guest_signal_table",
    ]

    /// What could be decoded: one entry per region in the file, nil where
    /// that region had a problem, its name where the name itself was
    /// readable (so name rules still run), and every problem found.
    struct Result {
        var regions: [RegionSpec?] = []
        var names: [String?] = []
        var problems: [LayoutProblem] = []
    }

    static func decode(_ document: JSONValue) -> Result {
        var result = Result()
        guard case let .object(members) = document else {
            result.problems.append(LayoutProblem(subject: nil, message: "the document must be an object with \"\(regionsKey)\", not \(document.kindName)"))
            return result
        }
        for (key, _) in members where key != regionsKey && !isComment(key) {
            result.problems.append(LayoutProblem(subject: nil, message: unknownKeyMessage(key)))
        }
        guard let list = document[regionsKey] else {
            result.problems.append(LayoutProblem(subject: nil, message: "\"\(regionsKey)\" is missing"))
            return result
        }
        guard case let .array(entries) = list else {
            result.problems.append(LayoutProblem(subject: nil, message: "\"\(regionsKey)\" must be an array, not \(list.kindName)"))
            return result
        }
        if entries.isEmpty {
            result.problems.append(LayoutProblem(subject: nil, message: "\"\(regionsKey)\" is empty: a layout needs at least one region"))
        }
        for (index, entry) in entries.enumerated() {
            var fields = FieldReader(subject: "region #\(index)")
            result.regions.append(fields.region(entry))
            if case let .string(name)? = entry["device_name"] {
                result.names.append(name)
            } else {
                result.names.append(nil)
            }
            result.problems += fields.problems
        }
        return result
    }

    static func isComment(_ key: String) -> Bool { key.hasPrefix("__") }

    static func unknownKeyMessage(_ key: String) -> String {
        "unknown field \"\(key)\" (comments must start with \"__\")"
    }
}

/// Reads the fields of one region, collecting a problem per bad field.
private struct FieldReader {
    var subject: String
    var problems: [LayoutProblem] = []

    mutating func region(_ value: JSONValue) -> RegionSpec? {
        guard case let .object(members) = value else {
            report("must be an object, not \(value.kindName)")
            return nil
        }
        // Name the region as soon as its name is known, so every later
        // message says which region it is about.
        if case let .string(name)? = value["device_name"] { subject = "region '\(name)'" }
        for (key, _) in members where !LayoutDecoder.regionKeys.contains(key) && !LayoutDecoder.isComment(key) {
            report(LayoutDecoder.unknownKeyMessage(key))
        }
        let name = string(value, "device_name")
        let current = integer(value, "current_version", in: 0...UInt64(UInt16.max))
        let minimum = integer(value, "min_compatible_version", in: 0...UInt64(UInt16.max))
        let size = integer(value, "region_size", in: 1...UInt64(UInt32.max))
        let managedBy = value["managed_by"] == nil ? .some(nil) : string(value, "managed_by").map { Optional($0) }
        let guestToHost = signalTable(value, "guest_to_host_signal_table")
        let hostToGuest = signalTable(value, "host_to_guest_signal_table")
        guard let name, let current, let minimum, let size, let managedBy, let guestToHost, let hostToGuest else {
            return nil
        }
        return RegionSpec(
            name: name, currentVersion: UInt16(current), minCompatibleVersion: UInt16(minimum),
            regionSize: UInt32(size), managedBy: managedBy,
            guestToHostNodesLg2: guestToHost, hostToGuestNodesLg2: hostToGuest)
    }

    private mutating func signalTable(_ region: JSONValue, _ key: String) -> UInt32? {
        guard let table = region[key] else {
            report("field \"\(key)\" is missing")
            return nil
        }
        guard case let .object(members) = table else {
            report("\(key) must be an object, not \(table.kindName)")
            return nil
        }
        for (member, _) in members where member != "num_nodes_lg2" && !LayoutDecoder.isComment(member) {
            report("\(key): \(LayoutDecoder.unknownKeyMessage(member))")
        }
        let limit = UInt64(LayoutPlanner.maximumNodesLg2)
        return integer(table, "num_nodes_lg2", in: 0...limit, path: "\(key).num_nodes_lg2").map(UInt32.init)
    }

    private mutating func string(_ object: JSONValue, _ key: String) -> String? {
        guard let value = object[key] else {
            report("field \"\(key)\" is missing")
            return nil
        }
        guard case let .string(string) = value else {
            report("\(key) must be a string, not \(value.kindName)")
            return nil
        }
        return string
    }

    private mutating func integer(
        _ object: JSONValue, _ key: String, in range: ClosedRange<UInt64>, path: String? = nil
    ) -> UInt64? {
        let field = path ?? key
        guard let value = object[key] else {
            report("field \"\(field)\" is missing")
            return nil
        }
        guard case let .number(literal) = value else {
            report("\(field) must be an integer, not \(value.kindName)")
            return nil
        }
        guard let number = UInt64(literal), range.contains(number) else {
            let isInteger = literal.allSatisfy { $0.isASCII && ($0.isNumber || $0 == "-") }
            report(isInteger
                ? "\(field) \(literal) is out of range \(range.lowerBound)...\(range.upperBound)"
                : "\(field) must be an integer, not \(literal)")
            return nil
        }
        return number
    }

    private mutating func report(_ message: String) {
        problems.append(LayoutProblem(subject: subject, message: message))
    }
}
