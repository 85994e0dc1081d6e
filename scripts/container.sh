# Boots Debian's systemd in a systemd-nspawn container over an overlay of
# this machine's root (../shared/notes/real-systemd.md: the machine's own
# files are not touched), for the package tests (systemd-test.sh,
# libvirt-test.sh), and gives them `check`, `inside` and friends. Sourced,
# not run; the caller sets `deb` (the package to test) first. Needs root
# and systemd-container.

pass=0
fail=0
check() {  # check DESCRIPTION COMMAND...
    local description=$1; shift
    if "$@"; then echo "ok: $description"; pass=$((pass + 1)); else echo "FAILED: $description"; fail=$((fail + 1)); fi
}

[ "$(id -u)" = 0 ] || { echo "$0: needs root (it boots a container)" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || { echo "$0: systemd-nspawn is missing: apt-get install systemd-container" >&2; exit 1; }

base=$(mktemp -d /var/tmp/ivs-systemd.XXXXXX)
nspawn=
cleanup() {
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        [ -n "${leader:-}" ] && timeout 10 nsenter -t "$leader" -a systemctl poweroff --no-block >/dev/null 2>&1 || true
        for _ in $(seq 300); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
        # Killing the container's init ends every process in its pid namespace.
        [ -n "${leader:-}" ] && kill -KILL "$leader" 2>/dev/null || true
        kill -KILL "$nspawn" 2>/dev/null || true
        wait "$nspawn" 2>/dev/null || true
    fi
    if mountpoint -q "$base/root"; then umount "$base/root" || umount -l "$base/root" || true; fi
    mountpoint -q "$base/root" || rm -rf --one-file-system "$base"
}
trap cleanup EXIT

mkdir -p "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
mkdir -p "$base/root/var/lib/ivs-test"
cp "$deb" "$base/root/var/lib/ivs-test/ivserver.deb"
cp scripts/qtest-vm.py scripts/peer-check.py "$base/root/var/lib/ivs-test/"
# The container boots to a target of its own: basic.target and nothing the
# machine happens to have installed (a database, a web server), and it has
# a network of its own, so nothing there can clash with the machine's.
cat >"$base/root/etc/systemd/system/ivs-test.target" <<'UNIT'
[Unit]
Description=ivserver's package test
Requires=basic.target
After=basic.target
AllowIsolate=yes
UNIT
systemd-nspawn -D "$base/root" --register=no --keep-unit -M ivs-test-$$ --private-network --boot --console=read-only \
    systemd.unit=ivs-test.target >"$base/boot.log" 2>&1 &
nspawn=$!
leader=
for _ in $(seq 200); do
    leader=$(pgrep -P "$nspawn" | head -1 || true)
    [ -n "$leader" ] && break
    sleep 0.05
done
[ -n "$leader" ] || { cat "$base/boot.log"; echo "$0: the container did not start" >&2; exit 1; }

# A command inside the container, with a clean environment.
inside() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# Until the container's systemd has its bus up, systemctl cannot ask it.
state=
for _ in $(seq 240); do
    state=$(timeout 120 nsenter -t "$leader" -a systemctl is-system-running --wait 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
done
echo "container booted: $state"
case "$state" in running|degraded) ;; *) cat "$base/boot.log"; exit 1 ;; esac

unit_state() {  # "ActiveState SubState Type NRestarts"
    local property values=()
    for property in ActiveState SubState Type NRestarts; do values+=("$(inside systemctl show -p "$property" --value "$1")"); done
    echo "${values[*]}"
}
quietly() {  # runs a command, showing its output only when it fails
    local output
    if output=$("$@" 2>&1); then return 0; fi
    echo "$output"; return 1
}
file_mode() { inside stat -c '%A %G' "$1"; }
journal() { inside journalctl -q -o cat -u "$1"; }
