import WireFormat

/// What `ivserver layout` prints: the computed plan as a table for people
/// or as JSON for tools. Pure.
public enum LayoutReport {
    public static func table(_ plan: LayoutPlan, source: String) -> String {
        var lines = ["layout \(source): \(plan.regionCount) regions, valid"]
        lines += RegionTable.lines(LayoutEncoder.header(plan))
        lines.append("allocated \(plan.allocatedSize) bytes (\(hex0x(plan.allocatedSize))); "
            + "shared memory size \(plan.size) bytes (\(hex0x(plan.size)), the next power of two)")
        lines.append(RegionTable.offsetsNote)
        return lines.joined(separator: "\n") + "\n"
    }

    public static func json(_ plan: LayoutPlan) -> String {
        let regions = plan.regions.map { region in
            "    {\"index\": \(region.index), \"name\": \(quoted(region.name)), "
                + "\"current_version\": \(region.spec.currentVersion), \"min_compatible_version\": \(region.spec.minCompatibleVersion), "
                + "\"begin\": \(region.beginOffset), \"end\": \(region.endOffset), \"size\": \(region.size), "
                + "\"guest_to_host_signal_table\": \(table(region.guestToHost)), "
                + "\"host_to_guest_signal_table\": \(table(region.hostToGuest)), "
                + "\"data_offset\": \(region.dataOffset), "
                + "\"managed_by\": \(region.spec.managedBy.map(quoted) ?? "null"), \"managed_by_index\": \(region.managedByIndex)}"
        }
        return "{\n  \"region_count\": \(plan.regionCount),\n  \"allocated_size\": \(plan.allocatedSize),\n  \"size\": \(plan.size),\n"
            + "  \"regions\": [\n" + regions.joined(separator: ",\n") + "\n  ]\n}\n"
    }

    private static func table(_ layout: SignalTableLayout) -> String {
        "{\"num_nodes_lg2\": \(layout.nodesLg2), \"table_offset\": \(layout.tableOffset), \"interrupt_signalled_offset\": \(layout.signalledOffset)}"
    }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String { JSONValue.quoted(text) }
}

