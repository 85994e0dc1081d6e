import WireFormat

/// The binary vSoC 2.0 header for a plan. The byte format itself lives in
/// VSoCFormat's `LayoutHeader`, shared with the host client library, so the
/// writer and the readers cannot drift apart.
public enum LayoutEncoder {
    /// The header bytes: 16 + 60 × regionCount.
    public static func encode(_ plan: LayoutPlan) -> [UInt8] {
        header(plan).encode()
    }

    public static func header(_ plan: LayoutPlan) -> LayoutHeader {
        LayoutHeader(size: plan.size, regions: plan.regions.map(\.descriptor))
    }
}
