#!/bin/sh
# Prints DefaultLayout.swift for the JSON layout given as $1.
set -eu
cat <<'HEAD'
// The default layout compiled into the binary, so `ivserver` works with no
// --layout and no installed files. It must stay identical to
// conf/vsoc_mem.json (a test compares them byte for byte); after editing the
// JSON file, regenerate this one with `make default-layout`.
public enum DefaultLayout {
    public static let sourceName = "built-in default layout (conf/vsoc_mem.json)"

    public static let json = #"""
HEAD
cat "$1"
printf '%s\n' '"""#' '}'
