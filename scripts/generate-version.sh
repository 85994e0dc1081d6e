#!/bin/sh
# Prints Version.swift from the VERSION file, the one place the version is set.
set -eu
version=$(cat "$1")
cat <<EOS
// Generated from VERSION by \`make version\`; a test checks they agree.
/// The version of ivserver, for --version, the .deb and the man page.
public enum IVServerVersion {
    public static let string = "$version"
}
EOS
