/// What `ivserver layout` prints: the computed plan as a table for people
/// or as JSON for tools. Pure.
public enum LayoutReport {
    public static func table(_ plan: LayoutPlan, source: String) -> String {
        var rows = [["#", "name", "begin", "end", "size", "g2h table", "g2h word", "h2g table", "h2g word", "data", "managed by"]]
        for region in plan.regions {
            let manager = region.spec.managedBy ?? "-"
            rows.append([
                "\(region.index)", region.name, hex0x(region.beginOffset), hex0x(region.endOffset), "\(region.size)",
                "\(region.guestToHost.tableOffset)", "\(region.guestToHost.signalledOffset)",
                "\(region.hostToGuest.tableOffset)", "\(region.hostToGuest.signalledOffset)",
                "\(region.dataOffset)", manager,
            ])
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = ["layout \(source): \(plan.regionCount) regions, valid"]
        for row in rows {
            lines.append(zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }
                .joined(separator: "  ").trimmingTrailingSpaces)
        }
        lines.append("allocated \(plan.allocatedSize) bytes (\(hex0x(plan.allocatedSize))); "
            + "shared memory size \(plan.size) bytes (\(hex0x(plan.size)), the next power of two)")
        lines.append("offsets of tables, words and data are relative to the region's begin")
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
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where scalar.value < 0x20:
                out += "\\u00" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

private func hex0x<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

extension String {
    var trimmingTrailingSpaces: String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
