// The default layout compiled into the binary, so `ivserver` works with no
// --layout and no installed files. It must stay identical to
// conf/vsoc_mem.json (tests compare the text byte for byte, and the regions
// with what the text decodes to); after editing the JSON file, regenerate
// this one with `make default-layout`.
public enum DefaultLayout {
    public static let sourceName = "built-in default layout (conf/vsoc_mem.json)"

    /// The regions of `json`, as values: start-up plans these directly
    /// instead of parsing the text (about 0.3 ms less).
    public static let regions: [RegionSpec] = [
        RegionSpec(name: "hwcomposer", currentVersion: 1, minCompatibleVersion: 1, regionSize: 16384,
                   managedBy: nil, guestToHostNodesLg2: 2, hostToGuestNodesLg2: 2),
        RegionSpec(name: "fb_broadcast", currentVersion: 0, minCompatibleVersion: 0, regionSize: 4096,
                   managedBy: nil, guestToHostNodesLg2: 2, hostToGuestNodesLg2: 2),
        RegionSpec(name: "gralloc_manager", currentVersion: 0, minCompatibleVersion: 0, regionSize: 40960,
                   managedBy: nil, guestToHostNodesLg2: 2, hostToGuestNodesLg2: 2),
        RegionSpec(name: "gralloc_memory", currentVersion: 0, minCompatibleVersion: 0, regionSize: 419430400,
                   managedBy: "gralloc_manager", guestToHostNodesLg2: 0, hostToGuestNodesLg2: 0),
        RegionSpec(name: "e2e_primary", currentVersion: 1, minCompatibleVersion: 1, regionSize: 16384,
                   managedBy: nil, guestToHostNodesLg2: 1, hostToGuestNodesLg2: 1),
        RegionSpec(name: "e2e_secondary", currentVersion: 1, minCompatibleVersion: 1, regionSize: 16384,
                   managedBy: nil, guestToHostNodesLg2: 1, hostToGuestNodesLg2: 1),
        RegionSpec(name: "e2e_manager", currentVersion: 1, minCompatibleVersion: 1, regionSize: 4096,
                   managedBy: nil, guestToHostNodesLg2: 1, hostToGuestNodesLg2: 1),
        RegionSpec(name: "e2e_managed", currentVersion: 1, minCompatibleVersion: 1, regionSize: 16384,
                   managedBy: "e2e_manager", guestToHostNodesLg2: 1, hostToGuestNodesLg2: 1),
    ]

    public static let json = #"""
{
  "__comment": "Default vSoC shared-memory layout for ivserver. Region order is the ABI: region i gets descriptor i and interrupt vector i. See docs/layout.md.",
  "vsoc_device_regions": [
    {
      "device_name": "hwcomposer",
      "__comment": "Display composition: the guest's hardware composer talks to the host here.",
      "current_version": 1,
      "min_compatible_version": 1,
      "region_size": 16384,
      "guest_to_host_signal_table": { "num_nodes_lg2": 2 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 2 }
    },
    {
      "device_name": "fb_broadcast",
      "__comment": "Announces each new frame to host-side viewers.",
      "current_version": 0,
      "min_compatible_version": 0,
      "region_size": 4096,
      "guest_to_host_signal_table": { "num_nodes_lg2": 2 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 2 }
    },
    {
      "device_name": "gralloc_manager",
      "__comment": "Bookkeeping for the graphics buffers that live in gralloc_memory.",
      "current_version": 0,
      "min_compatible_version": 0,
      "region_size": 40960,
      "guest_to_host_signal_table": { "num_nodes_lg2": 2 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 2 }
    },
    {
      "device_name": "gralloc_memory",
      "__comment": "The graphics buffers themselves (400 MiB); allocation is decided by gralloc_manager.",
      "managed_by": "gralloc_manager",
      "current_version": 0,
      "min_compatible_version": 0,
      "region_size": 419430400,
      "guest_to_host_signal_table": { "num_nodes_lg2": 0 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 0 }
    },
    {
      "device_name": "e2e_primary",
      "__comment": "End-to-end self test, first region.",
      "current_version": 1,
      "min_compatible_version": 1,
      "region_size": 16384,
      "guest_to_host_signal_table": { "num_nodes_lg2": 1 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 1 }
    },
    {
      "device_name": "e2e_secondary",
      "__comment": "End-to-end self test, second region.",
      "current_version": 1,
      "min_compatible_version": 1,
      "region_size": 16384,
      "guest_to_host_signal_table": { "num_nodes_lg2": 1 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 1 }
    },
    {
      "device_name": "e2e_manager",
      "__comment": "End-to-end self test of managed regions: the manager.",
      "current_version": 1,
      "min_compatible_version": 1,
      "region_size": 4096,
      "guest_to_host_signal_table": { "num_nodes_lg2": 1 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 1 }
    },
    {
      "device_name": "e2e_managed",
      "__comment": "End-to-end self test of managed regions: managed by e2e_manager.",
      "managed_by": "e2e_manager",
      "current_version": 1,
      "min_compatible_version": 1,
      "region_size": 16384,
      "guest_to_host_signal_table": { "num_nodes_lg2": 1 },
      "host_to_guest_signal_table": { "num_nodes_lg2": 1 }
    }
  ]
}
"""#
}
