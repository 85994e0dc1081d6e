#!/bin/sh
# Prints DefaultLayout.swift for the JSON layout given as $1: the text
# itself, and its regions as Swift values (python3 reads the JSON).
set -eu
cat <<'HEAD'
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
HEAD
python3 - "$1" <<'PY'
import json, sys
for region in json.load(open(sys.argv[1]))["vsoc_device_regions"]:
    managed_by = region.get("managed_by")
    print('        RegionSpec(name: %s, currentVersion: %d, minCompatibleVersion: %d, regionSize: %d,' % (
        json.dumps(region["device_name"]), region["current_version"], region["min_compatible_version"], region["region_size"]))
    print('                   managedBy: %s, guestToHostNodesLg2: %d, hostToGuestNodesLg2: %d),' % (
        json.dumps(managed_by) if managed_by is not None else "nil",
        region["guest_to_host_signal_table"]["num_nodes_lg2"], region["host_to_guest_signal_table"]["num_nodes_lg2"]))
PY
printf '%s\n\n' '    ]'
printf '%s\n' '    public static let json = #"""'
cat "$1"
printf '%s\n' '"""#' '}'
