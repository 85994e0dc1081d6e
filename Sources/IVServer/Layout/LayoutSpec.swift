import WireFormat
/// One region as the layout file describes it (see docs/layout.md).
public struct RegionSpec: Equatable, Sendable {
    public var name: String
    public var currentVersion: UInt16
    public var minCompatibleVersion: UInt16
    public var regionSize: UInt32
    /// The name of the region that manages this one, if any.
    public var managedBy: String?
    public var guestToHostNodesLg2: UInt32
    public var hostToGuestNodesLg2: UInt32

    public init(
        name: String, currentVersion: UInt16, minCompatibleVersion: UInt16, regionSize: UInt32,
        managedBy: String? = nil, guestToHostNodesLg2: UInt32, hostToGuestNodesLg2: UInt32
    ) {
        self.name = name
        self.currentVersion = currentVersion
        self.minCompatibleVersion = minCompatibleVersion
        self.regionSize = regionSize
        self.managedBy = managedBy
        self.guestToHostNodesLg2 = guestToHostNodesLg2
        self.hostToGuestNodesLg2 = hostToGuestNodesLg2
    }
}

/// A whole layout file: regions in file order (the order is the ABI: region i
/// has descriptor i and interrupt vector i).
public struct LayoutSpec: Equatable, Sendable {
    public var regions: [RegionSpec]

    public init(regions: [RegionSpec]) { self.regions = regions }
}

/// One thing wrong with a layout, naming the region and field where it can.
public struct LayoutProblem: Equatable, Sendable, CustomStringConvertible {
    /// "region 'hwcomposer'" or "region #3"; nil for file-level problems.
    public var subject: String?
    public var message: String

    public init(subject: String?, message: String) {
        self.subject = subject
        self.message = message
    }

    public var description: String { subject.map { "\($0): \(message)" } ?? message }
}

/// Every problem found in a layout, reported together.
public struct LayoutError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Where the layout came from ("conf/vsoc_mem.json", "built-in default").
    public var source: String
    public var problems: [LayoutProblem]
    /// What kind of file it is, for the message ("layout", "VM configuration").
    public var kind: String

    public init(source: String, problems: [LayoutProblem], kind: String = "layout") {
        self.source = source
        self.problems = problems
        self.kind = kind
    }

    public var description: String {
        let noun = problems.count == 1 ? "problem" : "problems"
        return (["invalid \(kind) \(source) (\(problems.count) \(noun)):"] + problems.map { "  \($0)" })
            .joined(separator: "\n")
    }
}
