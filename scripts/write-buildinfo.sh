#!/usr/bin/env bash
# Prints the .buildinfo for a .deb that scripts/build-deb.sh just built:
# what a verifier needs to build the same bytes again (the commit, the
# SOURCE_DATE_EPOCH, the Swift toolchain, the Debian release and the exact
# versions of the packages the build used), in the shape of Debian's
# .buildinfo files, and the .deb's checksum to compare with.
#
# usage: scripts/write-buildinfo.sh build/ivserver_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$1
export LC_ALL=C

field() { dpkg-deb -f "$deb" "$1"; }
# What the build ran: the compiler's C library and libuv's headers, the
# tools that shape the package, and what dpkg-shlibdeps read.
build_packages=(libuv1-dev libuv1 pkg-config libc6-dev libc6 libstdc++-12-dev libgcc-12-dev binutils
    dpkg-dev dpkg gzip xz-utils tar coreutils findutils sed mawk git)

echo "Format: 1.0"
echo "Source: ivserver"
echo "Binary: ivserver"
echo "Architecture: $(field Architecture)"
echo "Version: $(field Version)"
echo "Checksums-Sha256:"
echo " $(sha256sum "$deb" | cut -d' ' -f1) $(stat -c %s "$deb") $(basename "$deb")"
echo "Build-Origin: $(. /etc/os-release && echo "$NAME")"
echo "Build-Architecture: $(dpkg --print-architecture)"
echo "Build-Path: /usr/src/ivserver (the tree's own path is mapped to it)"
echo "Source-Commit: $(git rev-parse HEAD 2>/dev/null || echo 'none (no git history: the changelog dates it)')"
echo "Source-Date-Epoch: ${SOURCE_DATE_EPOCH:-unset}"
echo "Debian-Release: $(cat /etc/debian_version)"
echo "Swift-Toolchain: $(swift --version 2>&1 | head -1)"
echo "Installed-Build-Depends:"
installed=()
for package in "${build_packages[@]}"; do
    version=$(dpkg-query -W -f '${Version}' "$package" 2>/dev/null || true)
    [ -n "$version" ] && installed+=(" $package (= $version)")
done
(IFS=$'\n'; echo "${installed[*]}" | sed '$!s/$/,/')
echo "Environment:"
echo " LC_ALL=\"C\""
echo " SOURCE_DATE_EPOCH=\"${SOURCE_DATE_EPOCH:-}\""
echo " TZ=\"UTC\""
