#!/usr/bin/env bash
# Derives the system calls the server makes and checks that the packaged
# units' SystemCallFilter= allows every one: runs BINARY under strace over
# what the units run (start-up with --socket-group and the service manager's
# notify socket, both handshakes, a real QEMU over qtest, a stop signal; and
# the multi-peer mode with two peers), then expands the units' filter with
# systemd-analyze syscall-filter (every unit has the same filter; checked).
# Prints the traced set; exits 1 naming any call the filter would refuse.
#
# usage: scripts/syscall-check.sh path/to/ivserver path/to/ivctl
set -euo pipefail
cd "$(dirname "$0")/.."
server=$(realpath "$1")
ivctl=$(realpath "$2")
unit=packaging/ivserver@.service
for other in packaging/ivserver.service packaging/ivshmem-server@.service; do
    if [ "$(grep '^SystemCallFilter=' "$unit")" != "$(grep '^SystemCallFilter=' "$other")" ]; then
        echo "FAILED: $other's SystemCallFilter= differs from $unit's"; exit 1
    fi
done

work=$(mktemp -d /tmp/ivs-syscalls-XXXXXX)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# As under the units: a user that is not root, whose group is the one the
# sockets get (Group=ivshmem there; nogroup here).
user=nobody
group=nogroup
chmod 0777 "$work"
# A notify socket like systemd's, so READY=1/STATUS= are sent for real.
python3 - "$work/notify.sock" <<'PY' &
import socket, sys
import os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666)
while True: s.recv(4096)
PY
notify_pid=$!
trap 'kill $notify_pid 2>/dev/null; cleanup' EXIT
for _ in $(seq 100); do [ -S "$work/notify.sock" ] && break; sleep 0.05; done

NOTIFY_SOCKET=$work/notify.sock strace -f -qq -o "$work/trace" \
    setpriv --reuid "$user" --regid "$group" --clear-groups "$server" serve \
    --shm-path "$work/shm" --qemu-sock "$work/qemu.sock" --client-sock "$work/client.sock" \
    --socket-group "$group" --allow-gid "$group" >"$work/log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do grep -q 'ready:' "$work/log" 2>/dev/null && break; sleep 0.05; done
grep -q 'ready:' "$work/log" || { cat "$work/log"; exit 1; }

mkdir -p "$work/bin"
ln -s "$server" "$work/bin/ivserver"
ln -s "$ivctl" "$work/bin/ivctl"
PATH=$work/bin:$PATH python3 scripts/qtest-vm.py --qemu-sock "$work/qemu.sock" --client-sock "$work/client.sock" >/dev/null
"$ivctl" regions --client-sock "$work/client.sock" >/dev/null
# The stop signal goes to the server itself, not to strace.
kill -TERM "$(pgrep -P "$server_pid")"
wait "$server_pid" || true
server_pid=

# The multi-peer mode as ivshmem-server@.service runs it: two peers join,
# ring and leave (scripts/peer-check.py).
NOTIFY_SOCKET=$work/notify.sock strace -f -qq -o "$work/trace-peers" \
    setpriv --reuid "$user" --regid "$group" --clear-groups "$server" multi-peer --foreground \
    --socket "$work/peers.sock" -M "ivs-syscalls-$$" -n 2 --socket-group "$group" --allow-gid "$group" >"$work/log-peers" 2>&1 &
server_pid=$!
for _ in $(seq 200); do grep -q 'ready:' "$work/log-peers" 2>/dev/null && break; sleep 0.05; done
grep -q 'ready:' "$work/log-peers" || { cat "$work/log-peers"; exit 1; }
python3 scripts/peer-check.py "$work/peers.sock" 2 >/dev/null
kill -TERM "$(pgrep -P "$server_pid")"
wait "$server_pid" || true
server_pid=

# What setpriv did before it became the server is not the server's.
traced=$(for trace in "$work/trace" "$work/trace-peers"; do
        awk -v binary="$server" 'started { print } index($0, "execve(\"" binary "\"") { started = 1 }' "$trace"
    done | sed -n 's/^[0-9]* *\([a-z_0-9]*\)(.*/\1/p' | sort -u)

# The filter: the allow lines' sets, less the deny lines' (~) sets.
expand() {  # expand NAME...: the system calls of groups and names, recursively
    local item
    for item in "$@"; do
        case "$item" in
            @*) expand $(systemd-analyze syscall-filter --no-pager "$item" | sed -n 's/^    \([@a-z_0-9-]*\).*/\1/p') ;;
            *) echo "$item" ;;
        esac
    done
}
allowed=$(grep '^SystemCallFilter=[^~]' "$unit" | cut -d= -f2- | while read -r line; do expand $line; done | sort -u)
denied=$(grep '^SystemCallFilter=~' "$unit" | cut -d~ -f2- | while read -r line; do expand $line; done | sort -u)
effective=$(comm -23 <(echo "$allowed") <(echo "$denied"))

echo "the server made $(echo "$traced" | wc -l) distinct system calls: $(echo $traced)"
refused=$(comm -23 <(echo "$traced") <(echo "$effective"))
if [ -n "$refused" ]; then
    echo "FAILED: $unit's SystemCallFilter= refuses: $(echo $refused)"
    exit 1
fi
echo "ok: $unit's SystemCallFilter= allows every one"
