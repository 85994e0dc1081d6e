#!/usr/bin/env bash
# Tests the .deb as an operator meets it: lintian-clean, the right files,
# the extracted binary works and needs no Swift runtime, and it installs,
# serves with the packaged configuration and purges without a trace; then
# scripts/systemd-test.sh runs the units under a real systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
check() {  # check DESCRIPTION COMMAND...
    local description=$1; shift
    if "$@"; then echo "ok: $description"; pass=$((pass + 1)); else echo "FAILED: $description"; fail=$((fail + 1)); fi
}

deb=$(scripts/build-deb.sh | tail -1)
echo "built $deb"
work=$(mktemp -d /tmp/ivs-deb-XXXXXX)
cleanup() {
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
    dpkg --purge ivserver >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# A HALD handshake for region $2 on socket $1: prints "fds 3 bytes 8".
handshake() {
    python3 - "$1" "$2" <<'PY'
import socket, struct, array, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
assert s.recv(4) == b'\0\0\0\0'
name = sys.argv[2].encode(); s.send(struct.pack('<h', len(name)) + name)
msg, anc, flags, addr = s.recvmsg(8, socket.CMSG_SPACE(16))
fds = array.array('i')
for level, kind, data in anc: fds.frombytes(data)
print('fds', len(fds), 'bytes', len(msg))
PY
}

# Starts $1 (an ivserver binary) serving on paths in $2; waits for ready.
serve() {
    local binary=$1 dir=$2; shift 2
    "$binary" --shm-path "$dir/shm" --qemu-sock "$dir/q.sock" --client-sock "$dir/c.sock" "$@" >"$dir/log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do grep -q 'ready:' "$dir/log" 2>/dev/null && return 0; sleep 0.05; done
    cat "$dir/log"; return 1
}
stop() {
    kill -TERM "$server_pid"; wait "$server_pid"; local status=$?; server_pid=; return $status
}

lintian_output=$(lintian "$deb" 2>&1 | grep -v 'running with root privileges' || true)
[ -n "$lintian_output" ] && echo "$lintian_output"
check "lintian reports no error and no warning" test -z "$(echo "$lintian_output" | grep -E '^[EW]:' || true)"

contents=$(dpkg -c "$deb" | awk '{print $6}')
for path in ./usr/bin/ivserver ./usr/bin/ivctl ./usr/share/man/man1/ivctl.1.gz ./etc/ivserver/vsoc_mem.json ./lib/systemd/system/ivserver.service \
    ./lib/systemd/system/ivserver@.service ./usr/share/man/man1/ivserver.1.gz \
    ./usr/bin/ivshmem-server ./lib/systemd/system/ivshmem-server@.service ./usr/share/man/man1/ivshmem-server.1.gz \
    ./lib/systemd/system/ivserver.socket ./lib/systemd/system/ivserver@.socket ./lib/systemd/system/ivshmem-server@.socket \
    ./usr/share/doc/ivserver/copyright ./usr/share/doc/ivserver/changelog.Debian.gz; do
    check "dpkg -c lists $path" grep -qx "$path" <<<"$contents"
done
check "the layout is a conffile" grep -qx /etc/ivserver/vsoc_mem.json <(dpkg-deb -f "$deb" Conffiles 2>/dev/null; dpkg-deb -I "$deb" conffiles)
check "the version comes from VERSION" test "$(dpkg-deb -f "$deb" Version)" = "$(cat VERSION)-1"

dpkg -x "$deb" "$work/root"
extracted=$work/root/usr/bin/ivserver
libs=$(ldd "$extracted" | awk '{print $1}' | sed 's/\.so.*//' | sort -u | tr '\n' ' ')
echo "extracted binary needs: $libs"
for binary in "$extracted" "$work/root/usr/bin/ivctl"; do
    check "no Swift runtime in $(basename "$binary"): only libuv, libc, libm, libstdc++ and libgcc" \
        test -z "$(ldd "$binary" | awk '{print $1}' | grep -vE '^(linux-vdso\.so|/lib64/ld-linux|libuv\.so|libc\.so|libm\.so|libstdc\+\+\.so|libgcc_s\.so)' || true)"
done
check "ivctl does not link libuv (the client library needs none)" bash -c "! ldd $work/root/usr/bin/ivctl | grep -q libuv"
check "the units' system-call filter allows every call the server makes (strace)" \
    scripts/syscall-check.sh "$extracted" "$work/root/usr/bin/ivctl"
check "--version prints VERSION" test "$("$extracted" --version)" = "$(cat VERSION)"
check "layout prints the default table" grep -q '^3  gralloc_memory   0x10000     0x19010000' <("$extracted" layout)
mkdir "$work/x"
serve "$extracted" "$work/x"
check "the extracted binary serves a real handshake" test "$(handshake "$work/x/c.sock" e2e_primary)" = "fds 3 bytes 8"
stop; check "and stops cleanly, leaving nothing" test -z "$(ls "$work/x" | grep -v '^log$')"

# libvirt's local AppArmor file, which postinst adds a line to when it exists.
libvirt_local=/etc/apparmor.d/local/abstractions/libvirt-qemu
libvirt_local_before=$(cat "$libvirt_local" 2>/dev/null || echo absent)
dpkg -i "$deb" >/dev/null
check "installed: the ivshmem group exists" getent group ivshmem
check "systemd-analyze verify passes on the six units" \
    systemd-analyze verify /lib/systemd/system/ivserver.service /lib/systemd/system/ivserver@.service \
    /lib/systemd/system/ivshmem-server@.service /lib/systemd/system/ivserver.socket \
    /lib/systemd/system/ivserver@.socket /lib/systemd/system/ivshmem-server@.socket
check "ivshmem-server is the multi-peer mode under QEMU's server's name" \
    grep -q 'USAGE: ivshmem-server' <(/usr/bin/ivshmem-server -h)
check "ivserver(1) documents the multi-peer mode" grep -q 'multi-peer' <(zcat /usr/share/man/man1/ivserver.1.gz)
check "the installed ivshmem-server serves two peers" \
    bash -c "/usr/bin/ivshmem-server -F -S $work/peers.sock -M ivs-deb-test-$$ -n 2 2>$work/peers.log & pid=\$!; \
        for _ in \$(seq 200); do [ -S $work/peers.sock ] && break; sleep 0.05; done; \
        python3 scripts/peer-check.py $work/peers.sock 2; status=\$?; kill \$pid; wait \$pid; exit \$status"
mkdir "$work/y"
serve /usr/bin/ivserver "$work/y"
check "the installed binary uses the packaged layout" grep -q 'no --layout given: using /etc/ivserver/vsoc_mem.json' "$work/y/log"
check "the installed binary serves a real handshake" test "$(handshake "$work/y/c.sock" hwcomposer)" = "fds 3 bytes 8"
check "the installed ivctl reads the live table" grep -q '^3  gralloc_memory   0x10000     0x19010000' \
    <(/usr/bin/ivctl regions --client-sock "$work/y/c.sock")
buildinfo=${deb%.deb}.buildinfo
check "a .buildinfo beside the .deb records its sha256" grep -q "^ $(sha256sum "$deb" | cut -d' ' -f1) " "$buildinfo"
check "the binaries keep their RELRO and a build ID" \
    bash -c "for b in $work/root/usr/bin/ivserver $work/root/usr/bin/ivctl; do readelf -lW \$b | grep -q GNU_RELRO && readelf -n \$b | grep -q 'Build ID' || exit 1; done"
check "and the commit, the Swift toolchain and the Debian release" \
    bash -c "grep -q '^Source-Commit: ' $buildinfo && grep -q '^Swift-Toolchain: Swift version' $buildinfo && grep -q '^Debian-Release: ' $buildinfo"
check "and the build packages' versions" grep -q '^ libuv1-dev (= ' "$buildinfo"
check "every file of the package dated by the commit (SOURCE_DATE_EPOCH)" \
    test -z "$(TZ=UTC dpkg-deb -c "$deb" | awk -v d="$(date -u -d "@$(sed -n 's/^Source-Date-Epoch: //p' "$buildinfo")" '+%Y-%m-%d %H:%M')" '$4" "$5 != d')"
check "ivctl's man page documents the exit codes" grep -q "wait: the timeout passed" <(zcat /usr/share/man/man1/ivctl.1.gz)
stop
dpkg --purge ivserver >/dev/null
check "purged: no binaries" test ! -e /usr/bin/ivserver -a ! -e /usr/bin/ivctl -a ! -L /usr/bin/ivshmem-server
check "purged: no conffile or /etc/ivserver" test ! -e /etc/ivserver
check "purged: no units" test -z "$(ls /lib/systemd/system/ivserver* /lib/systemd/system/ivshmem-server* 2>/dev/null)"
check "purged: no group" bash -c '! getent group ivshmem'
check "purged: no docs" test ! -e /usr/share/doc/ivserver
check "purged: libvirt's local AppArmor file as it was" test "$(cat "$libvirt_local" 2>/dev/null || echo absent)" = "$libvirt_local_before"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

# The units themselves, under a real systemd in a container; then with a
# real libvirtd there (docs/libvirt.md); then the same commit built again
# elsewhere, which must give the same bytes (docs/package.md). All run,
# whatever the first says.
status=0
scripts/systemd-test.sh "$deb" || status=1
scripts/libvirt-test.sh "$deb" || status=1
scripts/reproducible-check.sh "$deb" || status=1
exit $status
