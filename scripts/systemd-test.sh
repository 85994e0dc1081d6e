#!/usr/bin/env bash
# Runs the .deb under a real systemd: boots a systemd-nspawn container over
# an overlay of this machine's root (../shared/notes/real-systemd.md; the
# machine's own files are not touched) and, inside it, installs the package,
# starts both units through Type=notify, checks the files' modes, who may
# connect, a real QEMU attached with `ivserver qemu-args`, restarts, the
# multi-peer template, stop, purge and a second install. Needs root and systemd-container.
#
# usage: scripts/systemd-test.sh path/to/ivserver_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "$1")

. scripts/container.sh

# --- a host from before the socket units, then the upgrade ----------------------
# The package as it was before it had socket units: the services made their
# own sockets in a RuntimeDirectory. A host that runs one with a VM attached
# must come through the upgrade with its VM (docs/package.md, "Moving to the
# socket units").
rm -rf "$base/older" && dpkg-deb -R "$deb" "$base/older"
rm "$base/older/lib/systemd/system/"*.socket
for unit in "$base/older/lib/systemd/system/"*.service; do
    name=$(basename "$unit" .service)
    sed -i -e '/^Requires=.*\.socket$/d' -e '/^After=.*\.socket$/d' -e '/^Also=.*\.socket$/d' "$unit"
    case "$name" in
        ivserver@) runtime='ivserver/%i' ;;
        ivserver) runtime='ivserver/default' ;;
        ivshmem-server@) runtime='ivshmem-server/%i' ;;
    esac
    sed -i "s|^\[Service\]\$|[Service]\nRuntimeDirectory=$runtime\nRuntimeDirectoryMode=0755|" "$unit"
done
sed -i 's/^Version: \(.*\)-\([0-9]*\)$/Version: \1-0/' "$base/older/DEBIAN/control"
dpkg-deb --root-owner-group -b "$base/older" "$base/root/var/lib/ivs-test/older.deb" >/dev/null
check "dpkg -i installs the package as it was before its socket units" quietly inside dpkg -i /var/lib/ivs-test/older.deb
inside useradd --no-create-home --shell /usr/sbin/nologin --groups ivshmem alice
inside useradd --no-create-home --shell /usr/sbin/nologin --groups ivshmem qemu-user
inside useradd --no-create-home --shell /usr/sbin/nologin bob
check "ivserver@vm1.service (no socket unit) starts and makes its own sockets" inside systemctl start ivserver@vm1.service
check "it is active through Type=notify, never restarted" test "$(unit_state ivserver@vm1.service)" = "active running notify 0"

# One QEMU stays attached from here through the upgrade and the restarts;
# after each, a new host client must see the bytes the guest wrote before
# it (the same memory) and both directions of interrupts must work (the
# same eventfds and connection).
rounds=/var/lib/ivs-test/rounds
mkfifo "$base/root$rounds"
nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    python3 /var/lib/ivs-test/qtest-vm.py --qemu-sock /run/ivserver/vm1/qemu.sock --client-sock /run/ivserver/vm1/client.sock \
    --user qemu-user --client-user alice --stay <"$base/root$rounds" >"$base/rounds.log" 2>&1 &
holder=$!
exec 9>"$base/root$rounds"
round() {  # round N: asks for round N (N > 0) and waits for it to pass
    [ "$1" -gt 0 ] && echo check >&9
    for _ in $(seq 1200); do
        grep -q "^round $1: passed" "$base/rounds.log" && return 0
        kill -0 "$holder" 2>/dev/null || break
        sleep 0.05
    done
    sed 's/^/    /' "$base/rounds.log"
    journal ivserver@vm1.service | tail -5 | sed 's/^/    journal: /'
    return 1
}
main_pid() { inside systemctl show -p MainPID --value ivserver@vm1.service; }
restarted() {  # restarted OLD_PID: waits until another main process is ready
    for _ in $(seq 200); do
        [ "$(inside systemctl show -p ActiveState --value ivserver@vm1.service)" = active ] \
            && [ "$(main_pid)" != "$1" ] && [ "$(main_pid)" != 0 ] && return 0
        sleep 0.05
    done
    inside systemctl status --no-pager ivserver@vm1.service; return 1
}
check "QEMU attached to the server from before the socket units (round 0)" round 0
qemu_pid=$(inside pgrep -f qemu-system-x86)
memory_inode=$(inside sh -c 'stat -c %i /dev/shm/ivserver-vm1')

old=$(main_pid)
check "upgrade to the package with socket units (postinst restarts the running server)" \
    quietly inside dpkg -i /var/lib/ivs-test/ivserver.deb
check "the upgrade restarted ivserver@vm1" restarted "$old"
check "ivserver@vm1.socket came up with it (Requires=)" test "$(inside systemctl is-active ivserver@vm1.socket)" = active
check "and the server serves on the socket unit's listeners" \
    grep -q "resumed what the previous server process handed over: shared memory inode $memory_inode," <(journal ivserver@vm1.service)
check "after the move to the socket unit: the same memory and interrupts both ways (round 1)" round 1
check "the socket unit's files: qemu.sock srw-rw---- group ivshmem" test "$(file_mode /run/ivserver/vm1/qemu.sock)" = "srw-rw---- ivshmem"

resumed() {  # the last start resumed the memory of inode $memory_inode
    journal ivserver@vm1.service | grep "resumed what the previous server process handed over" | tail -1 \
        | grep -q "shared memory inode $memory_inode,"
}
old=$(main_pid)
inside kill -KILL "$old"
check "kill -9: systemd restarts ivserver@vm1" restarted "$old"
check "the restarted server resumed from the fd store: the memory of inode $memory_inode" resumed
check "after the crash: the same memory and interrupts both ways, for a new host client (round 2)" round 2

old=$(main_pid)
check "systemctl restart" inside systemctl restart ivserver@vm1.service
check "after systemctl restart: the same memory and interrupts both ways (round 3)" round 3
check "a new main process" test "$(main_pid)" != "$old"
check "it resumed the same memory" resumed

# A newer version of the package: the same files, a higher version number.
rm -rf "$base/newer" && dpkg-deb -R "$deb" "$base/newer"
sed -i 's/^Version: \(.*\)-\([0-9]*\)$/Version: \1-99/' "$base/newer/DEBIAN/control"
dpkg-deb --root-owner-group -b "$base/newer" "$base/root/var/lib/ivs-test/newer.deb" >/dev/null
old=$(main_pid)
check "upgrade to a newer package version (postinst restarts the running servers)" \
    quietly inside dpkg -i /var/lib/ivs-test/newer.deb
check "the upgraded package is installed" grep -q -- '-99$' <(inside dpkg-query -W -f '${Version}' ivserver)
check "the upgrade restarted ivserver@vm1" restarted "$old"
check "after the upgrade: the same memory and interrupts both ways (round 4)" round 4
check "it resumed the same memory" resumed
check "through all of it, the same QEMU process" test "$(inside pgrep -f qemu-system-x86)" = "$qemu_pid"
echo quit >&9
exec 9>&-
wait "$holder" || true
check "systemctl stop ivserver@vm1.socket stops its server too" inside systemctl stop ivserver@vm1.socket
check "and leaves nothing in /run/ivserver/vm1 or /dev/shm" \
    test -z "$(inside sh -c 'find /run/ivserver/vm1 -mindepth 1; ls -d /dev/shm/ivserver-vm1* 2>/dev/null')"

# --- the socket unit alone: started when first used ------------------------------
check "systemctl enable --now ivserver@vm2.socket" quietly inside systemctl enable --now ivserver@vm2.socket
check "qemu.sock is srw-rw---- group ivshmem" test "$(file_mode /run/ivserver/vm2/qemu.sock)" = "srw-rw---- ivshmem"
check "client.sock is srw-rw---- group ivshmem" test "$(file_mode /run/ivserver/vm2/client.sock)" = "srw-rw---- ivshmem"
check "no server runs yet" test "$(inside systemctl is-active ivserver@vm2.service || true)" = inactive
regions() { inside runuser -u "$1" -- ivctl regions --client-sock /run/ivserver/vm2/client.sock 2>&1; }
check "alice's host-client handshake is served: it started the server" grep -q 'gralloc_memory' <(regions alice)
check "ivserver@vm2.service is active through Type=notify, never restarted" \
    test "$(unit_state ivserver@vm2.service)" = "active running notify 0"
check "and served on the socket unit's listeners" grep -q 'ready: 8 regions' <(journal ivserver@vm2.service)

# --- the sandbox's rating (docs/package.md: 0.5 SAFE for both) -----------------------------
for unit in ivserver.service ivserver@vm2.service; do
    exposure=$(inside systemd-analyze security --no-pager "$unit" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
    echo "  systemd-analyze security $unit: $exposure"
    check "$unit's exposure is at most 0.5" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 0.5) }'
done

# --- the memory in /dev/shm (docs/package.md) -----------
check "the memory /dev/shm/ivserver-vm2 is -rw------- group ivshmem (QEMU and clients get it as an fd)" \
    test "$(file_mode /dev/shm/ivserver-vm2)" = "-rw------- ivshmem"
check "it is owned by the unit's dynamic user, not root" test "$(inside stat -c %U /dev/shm/ivserver-vm2)" != root
check "its lock is beside it" inside test -e /dev/shm/ivserver-vm2.lock
check "nothing of the memory under /run (a small tmpfs every service shares)" test -z "$(inside find /run/ivserver -type f)"

# --- the memory grows in /dev/shm, never in /run ---------------------------------
used() { inside df --output=used -B1 "$1" | tail -1 | tr -d ' '; }
run_before=$(used /run); shm_before=$(used /dev/shm)
check "ivctl write puts 100 MiB into vm2's gralloc region" quietly inside sh -c \
    "head -c 104857600 /dev/zero | tr '\\0' M | ivctl write --client-sock /run/ivserver/vm2/client.sock gralloc_memory"
run_after=$(used /run); shm_after=$(used /dev/shm)
echo "  /run used: $run_before -> $run_after bytes; /dev/shm used: $shm_before -> $shm_after bytes"
check "/run's used space did not grow by it" test $((run_after - run_before)) -lt 10485760
# (less the region's first page, its signal tables', taken at start)
check "/dev/shm's did" test $((shm_after - shm_before)) -ge $((104857600 - 65536))
last_written() { inside ivctl dump --client-sock /run/ivserver/vm2/client.sock gralloc_memory --offset 104857584 --length 16 2>&1; }
check "the bytes are in the region" grep -q 'MMMMMMMMMMMMMMMM' <(last_written)
old=$(inside systemctl show -p MainPID --value ivserver@vm2.service)
inside kill -KILL "$old"
for _ in $(seq 200); do
    [ "$(inside systemctl show -p MainPID --value ivserver@vm2.service)" != "$old" ] \
        && [ "$(inside systemctl is-active ivserver@vm2.service)" = active ] && break
    sleep 0.05
done
check "after kill -9 the 100 MiB are still in the memory" grep -q 'MMMMMMMMMMMMMMMM' <(last_written)
check "still not in /run" test $(($(used /run) - run_before)) -lt 10485760

# --- who may connect ------------------------------------------------------------
check "alice (in ivshmem) completes a host-client handshake" grep -q 'gralloc_memory' <(regions alice)
output=$(regions bob || true)
echo "  bob: $output"
check "bob (not in ivshmem) cannot connect: the socket's mode stops him" grep -q 'Permission denied' <<<"$output"
# The second fence, the server's own credential check, with the socket open
# to all: the socket unit's mode, set by a drop-in (SocketMode=).
inside mkdir -p /etc/systemd/system/ivserver@vm2.socket.d
inside sh -c 'printf "[Socket]\nSocketMode=0666\n" > /etc/systemd/system/ivserver@vm2.socket.d/open.conf'
inside sh -c 'echo "IVSERVER_OPTIONS=\"--log-level debug\"" > /etc/default/ivserver'
inside systemctl daemon-reload
check "restarting the socket unit restarts its server (Requires=)" inside systemctl restart ivserver@vm2.socket
check "with SocketMode=0666 the socket is srw-rw-rw-" test "$(file_mode /run/ivserver/vm2/client.sock)" = "srw-rw-rw- ivshmem"
output=$(regions bob || true)
echo "  bob: $output"
check "bob is refused by the server's credential check" grep -q 'refused' <<<"$output"
bob_uid=$(inside id -u bob)
check "and the journal says so, naming bob's uid" grep -q "refused.*uid $bob_uid" <(journal ivserver@vm2.service)
check "/etc/default/ivserver's options reach the server (--log-level debug)" \
    grep -q 'handed in by a socket unit (ivserver@vm2.socket)' <(journal ivserver@vm2.service)
check "alice is still served" grep -q 'gralloc_memory' <(regions alice)
inside rm -r /etc/systemd/system/ivserver@vm2.socket.d /etc/default/ivserver
inside systemctl daemon-reload
check "back to the packaged settings" inside systemctl restart ivserver@vm2.socket

# --- a real QEMU ----------------------------------------------------------------
echo "QEMU (as qemu-user, in ivshmem) with the options of 'ivserver qemu-args':"
check "QEMU attaches, the guest's bytes reach a host client, a host interrupt reaches the guest" \
    inside python3 /var/lib/ivs-test/qtest-vm.py --qemu-sock /run/ivserver/vm2/qemu.sock \
        --client-sock /run/ivserver/vm2/client.sock --user qemu-user --client-user alice
check "the journal shows the VM connected" grep -q 'VM connected' <(journal ivserver@vm2.service)

# --- the service stopped, the socket unit kept ------------------------------------
check "systemctl stop ivserver@vm2.service" inside systemctl stop ivserver@vm2.service
check "the socket unit still listens" test "$(inside systemctl is-active ivserver@vm2.socket)" = active
check "its socket files remain" inside test -S /run/ivserver/vm2/qemu.sock -a -S /run/ivserver/vm2/client.sock
check "the memory went with the server" test -z "$(inside sh -c 'ls -A /dev/shm/ivserver-vm2* 2>/dev/null')"
check "the next host client starts a new server" grep -q 'gralloc_memory' <(regions alice)
check "which is active" test "$(inside systemctl is-active ivserver@vm2.service)" = active

# --- the default instance ---------------------------------------------------------
check "systemctl start ivserver.service starts ivserver.socket first" inside systemctl start ivserver.service
check "ivserver.service is active through Type=notify, never restarted" test "$(unit_state ivserver.service)" = "active running notify 0"
check "on /run/ivserver/default" test "$(file_mode /run/ivserver/default/client.sock)" = "srw-rw---- ivshmem"

# --- the multi-peer template: ivshmem-server@ ------------------------------------
inside sh -c 'echo "IVSHMEM_SERVER_OPTIONS=\"-l 1M -n 2\"" > /etc/ivserver/ivshmem-server-lab.conf'
check "systemctl enable --now ivshmem-server@lab.socket" quietly inside systemctl enable --now ivshmem-server@lab.socket
check "its socket is srw-rw---- group ivshmem" test "$(file_mode /run/ivshmem-server/lab/ivshmem.sock)" = "srw-rw---- ivshmem"
check "no server runs yet" test "$(inside systemctl is-active ivshmem-server@lab.service || true)" = inactive
check "two peers as alice (in ivshmem) join through it, ring each other and leave" \
    quietly inside runuser -u alice -- python3 /var/lib/ivs-test/peer-check.py /run/ivshmem-server/lab/ivshmem.sock 2
check "the first one started ivshmem-server@lab, through Type=notify" test "$(unit_state ivshmem-server@lab.service)" = "active running notify 0"
check "its settings file reached it: 1 MiB, 2 vectors, /dev/shm/ivshmem-lab" \
    grep -q 'ready: shared memory /dev/shm/ivshmem-lab (1 MiB), 2 vector(s) per peer' <(journal ivshmem-server@lab.service)
check "the journal shows them" grep -q 'peer 1 left' <(journal ivshmem-server@lab.service)
exposure=$(inside systemd-analyze security --no-pager ivshmem-server@lab.service | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
echo "  systemd-analyze security ivshmem-server@lab.service: $exposure"
check "ivshmem-server@lab's exposure is at most 0.5" awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 0.5) }'
output=$(inside runuser -u bob -- python3 /var/lib/ivs-test/peer-check.py /run/ivshmem-server/lab/ivshmem.sock 2 2>&1 || true)
check "bob (not in ivshmem) cannot connect" grep -q 'Permission denied' <<<"$output"
check "systemctl stop ivshmem-server@lab.socket stops its server too" inside systemctl stop ivshmem-server@lab.socket
check "and leaves no socket and no /dev/shm/ivshmem-lab" \
    test -z "$(inside sh -c 'find /run/ivshmem-server/lab -mindepth 1; ls -d /dev/shm/ivshmem-lab* 2>/dev/null')"
check "ivshmem-server@lab.socket starts again" inside systemctl start ivshmem-server@lab.socket
inside rm /etc/ivserver/ivshmem-server-lab.conf  # the administrator's file, which dpkg would keep

# --- stop, purge, install again -------------------------------------------------
check "systemctl stop ivserver@vm2.socket (and so its server)" inside systemctl stop ivserver@vm2.socket
check "stop leaves nothing in /run/ivserver/vm2" test -z "$(inside sh -c 'ls -A /run/ivserver/vm2 2>/dev/null')"
check "nor the memory or its lock in /dev/shm" test -z "$(inside sh -c 'ls -A /dev/shm/ivserver-vm2* 2>/dev/null')"
check "and the 100 MiB are given back to /dev/shm" test $(($(used /dev/shm) - shm_before)) -lt 10485760
check "ivserver.service still runs" test "$(unit_state ivserver.service)" = "active running notify 0"
check "apt-get purge (while ivserver.service runs)" quietly inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq ivserver
check "purge stopped the running server" test "$(inside systemctl show -p ActiveState --value ivserver.service)" = inactive
check "and its socket unit" test "$(inside systemctl show -p ActiveState --value ivserver.socket)" = inactive
check "and the multi-peer socket unit" test "$(inside systemctl show -p ActiveState --value ivshmem-server@lab.socket)" = inactive
check "purge removed /run/ivserver/default's sockets" test -z "$(inside sh -c 'ls -A /run/ivserver/default 2>/dev/null')"
check "and /dev/shm/ivserver-default" test -z "$(inside sh -c 'ls -A /dev/shm/ivserver-default* 2>/dev/null')"
check "purge removed the ivshmem group" bash -c "! nsenter -t $leader -a getent group ivshmem"
check "purge removed the conffile and /etc/ivserver" bash -c "! nsenter -t $leader -a test -e /etc/ivserver"
check "a second install after purge" quietly inside dpkg -i /var/lib/ivs-test/ivserver.deb
inside usermod -a -G ivshmem alice
check "ivserver@vm2.socket starts again" inside systemctl start ivserver@vm2.socket
check "and its server serves alice" grep -q 'gralloc_memory' <(regions alice)
check "a last purge" quietly inside env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq ivserver

echo "systemd: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
