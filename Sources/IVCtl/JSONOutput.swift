import IVClient
import WireFormat

/// What `--json` prints: one object a command, with `version` (of this
/// output's shape, raised when a member changes meaning) first. Pure.
enum JSONOutput {
    static let version = 1

    /// `ivctl regions --json`.
    static func regions(_ layout: LayoutHeader, socket: String) -> JSONValue {
        .object([
            ("version", .integer(version)),
            ("socket", .string(socket)),
            ("layout_version", .string("\(layout.majorVersion).\(layout.minorVersion)")),
            ("shared_memory_size", .integer(layout.size)),
            ("regions", regionsByName(layout)),
        ])
    }

    /// `ivctl status --json`: the VM (null when none is attached), the
    /// regions by name, and the server's state lines as `ivctl status` prints them.
    static func status(socket: String, vm: HALDProtocol.VMInfo?, layout: LayoutHeader, state: String) -> JSONValue {
        .object([
            ("version", .integer(version)),
            ("socket", .string(socket)),
            ("vm", vm.map { vm in
                .object([("pid", .integer(vm.pid)), ("start_ticks", .integer(vm.startTicks)),
                         ("started", .integer(vm.started)), ("attached", .integer(vm.attached))])
            } ?? .null),
            ("shared_memory_size", .integer(layout.size)),
            ("regions", regionsByName(layout)),
            ("state", .array(state.split(separator: "\n").map { .string(String($0)) })),
        ])
    }

    /// `ivctl peer list --json`.
    static func peers(_ peer: Peer, socket: String) -> JSONValue {
        .object([
            ("version", .integer(version)),
            ("socket", .string(socket)),
            ("id", .integer(peer.id)),
            ("shared_memory_size", .integer(peer.memory.count)),
            ("vectors", .integer(peer.vectorCount)),
            ("peers", .array(peer.peers.map { .object([("id", .integer($0.id)), ("vectors", .integer($0.vectors))]) })),
        ])
    }

    static func regionsByName(_ layout: LayoutHeader) -> JSONValue {
        .object(layout.regions.enumerated().map { index, region in
            (region.name, .object([
                ("index", .integer(index)),
                ("begin", .integer(region.beginOffset)),
                ("end", .integer(region.endOffset)),
                ("size", .integer(region.size)),
                ("current_version", .integer(region.currentVersion)),
                ("min_compatible_version", .integer(region.minCompatibleVersion)),
                ("guest_to_host_signal_table", table(region.guestToHost)),
                ("host_to_guest_signal_table", table(region.hostToGuest)),
                ("data_offset", .integer(region.dataOffset)),
                ("managed_by", region.managedByIndex == 0 || Int(region.managedByIndex) >= layout.regions.count
                    ? .null : .string(layout.regions[Int(region.managedByIndex)].name)),
            ]))
        })
    }

    private static func table(_ table: SignalTableLayout) -> JSONValue {
        .object([("num_nodes_lg2", .integer(table.nodesLg2)), ("table_offset", .integer(table.tableOffset)),
                 ("interrupt_signalled_offset", .integer(table.signalledOffset))])
    }

    static func print(_ value: JSONValue) {
        Output.text(value.serialized() + "\n")
    }
}
