#!/usr/bin/env bash
# Checks that the .deb is reproducible: the same commit, built again in
# another folder on another filesystem (a tmpfs), at another time, with
# another time zone, umask and locale, gives the same bytes. On a
# difference it says which member differs, and which file in it.
#
# usage: scripts/reproducible-check.sh [build/ivserver_<version>_<arch>.deb]
#   With a .deb built from this tree (whose work tree must be clean, so
#   that it is the commit's), builds once more; without, builds twice.
# Needs root (it mounts a tmpfs) and a committed tree.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "$0: needs root (it mounts a tmpfs)" >&2; exit 1; }

work=$(mktemp -d /var/tmp/ivs-repro.XXXXXX)
cleanup() {
    mountpoint -q "$work/tmpfs" && umount -l "$work/tmpfs"
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# build FOLDER TZ UMASK LOCALE: a clone of HEAD in FOLDER, built there; prints the .deb's path.
build() {
    git clone -q "$PWD" "$1"
    (cd "$1" && umask "$3" && env TZ="$2" LC_ALL="$4" LANG="$4" scripts/build-deb.sh | tail -1 | sed "s|^|$1/|")
}

given_commit=$( [ $# -ge 1 ] && sed -n 's/^Source-Commit: //p' "${1%.deb}.buildinfo" 2>/dev/null || true)
if [ $# -ge 1 ] && [ -z "$(git status --porcelain --untracked-files=no)" ] && [ "$given_commit" = "$(git rev-parse HEAD)" ]; then
    first=$(realpath "$1")
    echo "first build: $first (this tree, $(pwd -P))"
else
    [ $# -ge 1 ] && echo "$1 is not this tree's commit as it is (uncommitted changes, or built from another): building the commit twice"
    first=$(build "$work/a/ivserver" America/Los_Angeles 0002 C.UTF-8)
    echo "first build: $first"
fi
mkdir -p "$work/tmpfs"
mount -t tmpfs -o size=8g tmpfs "$work/tmpfs"
second=$(build "$work/tmpfs/elsewhere/ivserver-again" Asia/Kolkata 0077 POSIX)
echo "second build: $second (a tmpfs, another folder, TZ=Asia/Kolkata, umask 0077, LC_ALL=POSIX)"

a=$(sha256sum "$first" | cut -d' ' -f1)
b=$(sha256sum "$second" | cut -d' ' -f1)
echo "  sha256 $a"
echo "  sha256 $b"
if [ "$a" = "$b" ]; then
    echo "reproducible: 1 passed, 0 failed"
    exit 0
fi

# Which member of the ar archive, then which file of the tarballs.
echo "NOT reproducible: the two .debs differ"
for side in a b; do mkdir -p "$work/ar-$side"; done
(cd "$work/ar-a" && ar x "$first")
(cd "$work/ar-b" && ar x "$second")
for member in $(ar t "$first"); do
    if cmp -s "$work/ar-a/$member" "$work/ar-b/$member"; then echo "  same:    $member"; else echo "  differs: $member"; fi
done
for side in a b; do
    deb=$first; [ $side = b ] && deb=$second
    mkdir -p "$work/tree-$side"
    dpkg-deb -R "$deb" "$work/tree-$side"
    dpkg-deb -c "$deb" > "$work/list-$side"
done
diff "$work/list-a" "$work/list-b" | sed 's/^/  listing: /' || true
# Where two files first differ: the byte, how many differ, the ELF section
# it falls in, and the bytes around it in both, printable.
explain() {
    python3 - "$1" "$2" <<'PY'
import subprocess, sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
differing = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
if len(a) != len(b): differing.append(min(len(a), len(b)))
sections = []
if a[:4] == b"\x7fELF":
    for line in subprocess.run(["readelf", "-SW", sys.argv[1]], capture_output=True, text=True).stdout.splitlines():
        if "]" not in line: continue
        fields = line.split("]", 1)[1].split()
        try: sections.append((fields[0], int(fields[3], 16), int(fields[4], 16)))
        except (IndexError, ValueError): continue
def section(at):
    names = [name for name, offset, size in sections if offset <= at < offset + size and name not in (".bss", ".tbss")]
    return f" ({names[0]})" if names else ""
runs = []
for at in differing:
    if runs and at - runs[-1][1] <= 8: runs[-1][1] = at
    else: runs.append([at, at])
def printable(data, start, end):
    return "".join(chr(c) if 32 <= c < 127 else "." for c in data[max(0, start - 24):end + 24])
print(f"    {len(differing)} bytes differ in {len(runs)} place(s); sizes {len(a)} and {len(b)}")
for start, end in runs[:8]:
    print(f"    bytes {start}..{end}{section(start)}:")
    print(f"      first build:  {printable(a, start, end)}")
    print(f"      second build: {printable(b, start, end)}")
PY
}
(cd "$work/tree-a" && find . -type f | sort) | while read -r file; do
    if ! cmp -s "$work/tree-a/$file" "$work/tree-b/$file"; then
        echo "  file differs: ${file#./}"
        explain "$work/tree-a/$file" "$work/tree-b/$file"
    fi
done
# Both kept for a closer look.
mkdir -p build/reproducible-mismatch
cp "$first" build/reproducible-mismatch/first.deb
cp "$second" build/reproducible-mismatch/second.deb
echo "  both .debs kept in build/reproducible-mismatch/"
echo "reproducible: 0 passed, 1 failed"
exit 1
