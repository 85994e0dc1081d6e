#!/usr/bin/env bash
# Runs the .deb with a real libvirtd under a real systemd (the container of
# scripts/container.sh): installs the package beside libvirt-daemon-system,
# starts ivserver@vm1 and ivshmem-server@lab, defines TCG domains whose
# <shmem> devices are the ones docs/libvirt.md gives, and checks that they
# attach, that a host client's bytes reach their BAR2, that host tools can
# interrupt them, that two domains share one multi-peer server's memory,
# and that a destroyed domain leaves the server serving the next start.
# Needs root, systemd-container and libvirt-daemon-system installed on the
# machine (the container's root is an overlay of it).
#
# usage: scripts/libvirt-test.sh path/to/ivserver_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "$1")
command -v libvirtd >/dev/null || { echo "$0: libvirtd is missing: apt-get install libvirt-daemon-system" >&2; exit 1; }

# The <shmem> elements, from the documentation itself: what the test
# defines is what a user copies.
doc_element() {  # doc_element SOCKET-PATH: the <shmem>...</shmem> block naming it
    awk -v path="$1" '/<shmem /{block=""; inside=1} inside{block=block $0 "\n"} /<\/shmem>/{if (inside && index(block, path)) printf "%s", block; inside=0}' docs/libvirt.md
}
vsoc_shmem=$(doc_element /run/ivserver/vm1/qemu.sock)
lab_shmem=$(doc_element /run/ivshmem-server/lab/ivshmem.sock)
[ -n "$vsoc_shmem" ] && [ -n "$lab_shmem" ] || { echo "$0: docs/libvirt.md lacks the <shmem> examples" >&2; exit 1; }

. scripts/container.sh

seconds_since() { awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - start }'; }
virsh() { inside virsh -q -c qemu:///system "$@"; }
hmp() { virsh qemu-monitor-command "$1" --hmp "$2"; }
# A TCG domain (no KVM here) with no disk: SeaBIOS assigns the BARs, then
# finds nothing to boot, which is all these checks need.
domain() {  # domain NAME SHMEM-ELEMENT: its XML
    cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
$(sed 's/^/    /' <<<"$2")
  </devices>
</domain>
XML
}
# BAR2 of the 1af4:1110 device, once the firmware has placed it ("0x..." or nothing).
bar2() {
    hmp "$1" 'info pci' | awk '/PCI device 1af4:1110/{found=1} found && /BAR2:/{print $NF == "" ? "" : $0; exit}' \
        | sed -n 's/.*memory at \(0x[0-9a-f]*\) .*/\1/p'
}
wait_bar2() {  # wait_bar2 DOMAIN: prints the address once the firmware set it
    local address
    for _ in $(seq 600); do
        [ "$(virsh domstate "$1" 2>/dev/null)" = running ] || break
        address=$(bar2 "$1" || true)
        case "$address" in 0x*) [ "$address" != 0xffffffffffffffff ] && { echo "$address"; return 0; } ;; esac
        sleep 0.05
    done
    hmp "$1" 'info pci' >&2; return 1
}
xp_bytes() {  # xp_bytes DOMAIN ADDRESS COUNT: the guest-physical bytes, as "68 65 6c ..."
    hmp "$1" "xp /$3xb $2" | sed 's/^[0-9a-f]*: *//' | tr -s ' \r\n' ' ' | sed 's/0x//g; s/^ //; s/ $//'
}

# --- the package beside libvirt ---------------------------------------------------
check "dpkg -i installs the package next to libvirt" quietly inside dpkg -i /var/lib/ivs-test/ivserver.deb
check "postinst put libvirt's QEMU user in ivshmem" grep -qw ivshmem <(inside id -nG libvirt-qemu)
check "and pointed libvirt's local AppArmor abstraction at ivserver's" \
    grep -q 'include <abstractions/ivserver-qemu>' <(inside cat /etc/apparmor.d/local/abstractions/libvirt-qemu)
# The kernel here does not enforce AppArmor, so the profile is only parsed:
# libvirt's QEMU template with its abstractions, expanded as apparmor_parser
# would load it.
inside sh -c 'sed "s/LIBVIRT_TEMPLATE/ivs-test-domain/" /etc/apparmor.d/libvirt/TEMPLATE.qemu > /var/lib/ivs-test/domain-profile'
profile=$(inside apparmor_parser -p /var/lib/ivs-test/domain-profile 2>&1 || true)
check "apparmor_parser reads a libvirt QEMU profile with ivserver's abstraction" grep -q '^profile ivs-test-domain' <<<"$profile"
check "which grants the vSoC units' memory and socket" grep -q '/{dev,run}/shm/ivserver-\* rwm,' <<<"$profile"
check "and the multi-peer units' memory and socket" grep -q '/{dev,run}/shm/ivshmem-\* rwm,' <<<"$profile"
check "the profile compiles (apparmor_parser -Q -K)" quietly inside apparmor_parser -Q -K /var/lib/ivs-test/domain-profile

# These machines' cgroups (v1, read-only inside the container) cannot take a
# domain's cgroup: libvirt is told to make none. Nothing of ivserver's
# depends on it.
inside sh -c 'echo "cgroup_controllers = [ ]" >> /etc/libvirt/qemu.conf'
check "libvirtd starts" inside systemctl start libvirtd.service virtlogd.service
# docs/libvirt.md's one step besides the domain's <shmem>: the socket units.
check "systemctl enable --now ivserver@vm1.socket" quietly inside systemctl enable --now ivserver@vm1.socket
inside sh -c 'echo "IVSHMEM_SERVER_OPTIONS=\"-l 4M -n 2\"" > /etc/ivserver/ivshmem-server-lab.conf'
check "systemctl enable --now ivshmem-server@lab.socket" quietly inside systemctl enable --now ivshmem-server@lab.socket
check "no server runs before a domain starts" \
    test "$(inside systemctl is-active ivserver@vm1.service ivshmem-server@lab.service | sort -u | tr -d '\n')" = inactive

# --- a vSoC domain --------------------------------------------------------------
check "ivserver qemu-args --libvirt prints the element the docs give" \
    test "$(inside ivserver qemu-args --libvirt --qemu-sock /run/ivserver/vm1/qemu.sock)" = "$vsoc_shmem"
# The same domain without the device, for virsh start's time beside vm1's.
domain plain "" > "$base/root/var/lib/ivs-test/plain.xml"
check "virsh define plain (no <shmem>)" quietly virsh define /var/lib/ivs-test/plain.xml
started=$(date +%s.%N)
check "virsh start plain" quietly virsh start plain
echo "  plain started in $(seconds_since "$started") s"
check "virsh destroy plain" quietly virsh destroy plain
domain vm1 "$vsoc_shmem" > "$base/root/var/lib/ivs-test/vm1.xml"
check "virsh define the vSoC domain" quietly virsh define /var/lib/ivs-test/vm1.xml
started=$(date +%s.%N)
check "virsh start vm1" quietly virsh start vm1
echo "  vm1 started in $(seconds_since "$started") s"
qemu_pid() { inside cat "/run/libvirt/qemu/$1.pid"; }
check "the domain's QEMU started ivserver@vm1 through its socket" test "$(unit_state ivserver@vm1.service)" = "active running notify 0"
check "the server logged the VM attaching (its QEMU's pid)" grep -q "VM connected (pid $(qemu_pid vm1) uid" <(journal ivserver@vm1.service)
status=$(inside ivctl status --client-sock /run/ivserver/vm1/client.sock)
check "ivctl status shows it, with the vectors= of libvirt's JSON -device" grep -q "VM pid $(qemu_pid vm1) .*vectors=8" <<<"$status"
check "info pci shows the ivshmem-doorbell device, 1af4:1110" grep -q '1af4:1110' <(hmp vm1 'info pci')
bar=$(wait_bar2 vm1)
echo "  vm1's BAR2 at $bar"
check "a host client's bytes (ivctl write)" quietly inside ivctl write e2e_primary --offset 24 hello --client-sock /run/ivserver/vm1/client.sock
begin=$(inside ivctl regions --client-sock /run/ivserver/vm1/client.sock | awk '$2 == "e2e_primary" {print $3}')
check "reach the guest's BAR2 (xp over the monitor)" test "$(xp_bytes vm1 $((bar + begin + 24)) 5)" = "68 65 6c 6c 6f"
check "ivctl signal rings the guest's vector (its interrupt_signalled is checked below)" quietly inside ivctl signal e2e_primary --client-sock /run/ivserver/vm1/client.sock
destroyed=$(date +%s.%N)
check "virsh destroy vm1" quietly virsh destroy vm1
echo "  vm1 destroyed in $(seconds_since "$destroyed") s"
for _ in $(seq 100); do journal ivserver@vm1.service | grep -q 'VM disconnected' && break; sleep 0.05; done
check "the server logged the VM leaving" grep -q 'VM disconnected' <(journal ivserver@vm1.service)
check "and serves on" test "$(unit_state ivserver@vm1.service)" = "active running notify 0"
check "libvirt left the socket's owner and mode alone" test "$(file_mode /run/ivserver/vm1/qemu.sock)" = "srw-rw---- ivshmem"
check "a second virsh start vm1" quietly virsh start vm1
for _ in $(seq 100); do [ "$(journal ivserver@vm1.service | grep -c 'VM connected')" -ge 2 ] && break; sleep 0.05; done
check "attaches the new QEMU, its signalling state reset (the last interrupt was never taken)" \
    grep -q "VM connected (pid $(qemu_pid vm1) .*reset region 'e2e_primary' (#4): host → guest interrupt_signalled was set" \
    <(journal ivserver@vm1.service)
# A second domain on the same socket, while vm1 runs.
domain twin "$vsoc_shmem" > "$base/root/var/lib/ivs-test/twin.xml"
check "virsh define twin (vm1's <shmem>)" quietly virsh define /var/lib/ivs-test/twin.xml
output=$(virsh start twin 2>&1 || true)
echo "  virsh start twin: $output"
check "twin fails to start, saying the server refused it" grep -q 'server sent version -1, expecting 0' <<<"$output"
check "and the server logged both QEMUs" grep -q "refused a second VM connection (pid .*): the VM of pid $(qemu_pid vm1) uid" \
    <(journal ivserver@vm1.service)
check "virsh destroy vm1 again" quietly virsh destroy vm1

# The symptoms docs/libvirt.md's troubleshooting table gives.
domain elsewhere "$(sed 's|/run/ivserver/vm1/|/run/ivserver/none/|' <<<"$vsoc_shmem")" > "$base/root/var/lib/ivs-test/elsewhere.xml"
check "virsh define elsewhere (a socket where no server listens)" quietly virsh define /var/lib/ivs-test/elsewhere.xml
output=$(virsh start elsewhere 2>&1 || true)
echo "  virsh start elsewhere: $output"
check "it fails to start: no such file" grep -q "Failed to connect to '/run/ivserver/none/qemu.sock': No such file or directory" <<<"$output"
inside gpasswd -d libvirt-qemu ivshmem >/dev/null
output=$(virsh start vm1 2>&1 || true)
echo "  virsh start vm1, libvirt-qemu not in ivshmem: $output"
check "without the group step, vm1 fails to start: permission denied" \
    grep -q "Failed to connect to '/run/ivserver/vm1/qemu.sock': Permission denied" <<<"$output"
inside usermod -a -G ivshmem libvirt-qemu
check "with it again, vm1 starts (no libvirtd restart)" quietly virsh start vm1
check "virsh destroy vm1" quietly virsh destroy vm1
domain sized "$(sed "s|<model type='ivshmem-doorbell'/>|&\n  <size unit='M'>4</size>|" <<<"$vsoc_shmem")" > "$base/root/var/lib/ivs-test/sized.xml"
output=$( { virsh define /var/lib/ivs-test/sized.xml && virsh start sized; } 2>&1 || true)
echo "  a <size> in the element: $output"
check "a <size> is rejected by libvirt" grep -q "shmem model 'ivshmem-doorbell' does not support size setting" <<<"$output"

# Hot-plug: a running domain with a slot for a conventional PCI device.
domain hot "<controller type='pci' index='1' model='pcie-root-port'/>
<controller type='pci' index='2' model='pcie-to-pci-bridge'/>" > "$base/root/var/lib/ivs-test/hot.xml"
echo "$vsoc_shmem" > "$base/root/var/lib/ivs-test/shmem.xml"
check "virsh define hot (a pcie-to-pci-bridge, no <shmem>)" quietly virsh define /var/lib/ivs-test/hot.xml
check "virsh start hot" quietly virsh start hot
connected=$(journal ivserver@vm1.service | grep -c 'VM connected')
check "virsh attach-device hot shmem.xml --live" quietly virsh attach-device hot /var/lib/ivs-test/shmem.xml --live
for _ in $(seq 100); do [ "$(journal ivserver@vm1.service | grep -c 'VM connected')" -gt "$connected" ] && break; sleep 0.05; done
check "attaches hot's QEMU to the server" grep -q "VM connected (pid $(qemu_pid hot) uid" <(journal ivserver@vm1.service)
check "and hot's PCI bus has the device" grep -q '1af4:1110' <(hmp hot 'info pci')
check "virsh destroy hot" quietly virsh destroy hot

# --- two domains on one multi-peer server -------------------------------------------
domain lab-a "$lab_shmem" > "$base/root/var/lib/ivs-test/lab-a.xml"
# The second with fewer vectors than the server's -n: it is sent only those.
domain lab-b "$(sed "s/vectors='2'/vectors='1'/" <<<"$lab_shmem")" > "$base/root/var/lib/ivs-test/lab-b.xml"
for name in lab-a lab-b; do
    check "virsh define $name" quietly virsh define /var/lib/ivs-test/$name.xml
    check "virsh start $name" quietly virsh start $name
done
for _ in $(seq 100); do journal ivshmem-server@lab.service | grep -q '2 peer(s) joined' && break; sleep 0.05; done
check "the first domain's QEMU started ivshmem-server@lab through its socket" \
    test "$(unit_state ivshmem-server@lab.service)" = "active running notify 0"
check "both joined the multi-peer server" grep -q '2 peer(s) joined' <(journal ivshmem-server@lab.service)
check "lab-b's vectors=1, read from libvirt's JSON -device, trims what it is sent" \
    grep -q "is a QEMU with ivshmem-doorbell vectors=1, the server has 2" <(journal ivshmem-server@lab.service)
peers=$(inside ivctl peer list -S /run/ivshmem-server/lab/ivshmem.sock -n 2)
check "ivctl peer list (a host peer) sees both domains as peers" test "$(grep -c '^peer ' <<<"$peers")" -ge 2
check "ivctl peer write puts bytes in the shared memory" \
    quietly inside ivctl peer write -S /run/ivshmem-server/lab/ivshmem.sock -n 2 --offset 0x100 shared
for name in lab-a lab-b; do
    bar=$(wait_bar2 $name)
    check "which $name sees through its BAR2 ($bar)" test "$(xp_bytes $name $((bar + 0x100)) 6)" = "73 68 61 72 65 64"
done
check "ivctl peer ring interrupts lab-a (peer 0)" quietly inside ivctl peer ring -S /run/ivshmem-server/lab/ivshmem.sock -n 2 0 0
lab_b=$(qemu_pid lab-b)
check "virsh destroy lab-b" quietly virsh destroy lab-b
left() { journal ivshmem-server@lab.service | grep "left (pid $lab_b uid"; }
for _ in $(seq 100); do left >/dev/null && break; sleep 0.05; done
check "the server logged lab-b leaving, told lab-a, and serves on" \
    grep -q '; told the others; 1 peer(s) joined$' <(left || journal ivshmem-server@lab.service >&2)
check "lab-b starts again" quietly virsh start lab-b
for name in lab-a lab-b; do virsh destroy "$name" >/dev/null 2>&1 || true; done

# --- libvirt after ivserver (the trigger), and removal ---------------------------
local_abstraction=/etc/apparmor.d/local/abstractions/libvirt-qemu
inside gpasswd -d libvirt-qemu ivshmem >/dev/null
inside sed -i '/^# ivserver: /,+1d' "$local_abstraction"
# What dpkg does when libvirt is installed or upgraded after ivserver.
check "libvirt's abstraction changing triggers ivserver's postinst" \
    quietly inside sh -c 'dpkg-trigger --no-await /etc/apparmor.d/abstractions/libvirt-qemu && dpkg --triggers-only --pending'
check "which puts libvirt-qemu in ivshmem again" grep -qw ivshmem <(inside id -nG libvirt-qemu)
check "and the include back, once" test "$(inside grep -c 'include <abstractions/ivserver-qemu>' "$local_abstraction")" = 1
# A newer libvirt, whose abstraction includes abstractions/libvirt-qemu.d/
# (and the local file no more): the file the package ships there grants
# the same, and the trigger takes the local include out again.
inside sed -i 's|^ *#*include <local/abstractions/libvirt-qemu>|  include if exists <abstractions/libvirt-qemu.d>|' /etc/apparmor.d/abstractions/libvirt-qemu
check "with a libvirt-qemu.d abstraction, the trigger drops the local include" \
    quietly inside sh -c 'dpkg-trigger --no-await /etc/apparmor.d/abstractions/libvirt-qemu && dpkg --triggers-only --pending \
        && ! grep -q ivserver /etc/apparmor.d/local/abstractions/libvirt-qemu'
profile=$(inside apparmor_parser -p /var/lib/ivs-test/domain-profile 2>&1 || true)
check "and the shipped libvirt-qemu.d/ivserver grants the units' files" \
    test "$(grep -c '/{dev,run}/shm/ivserver-\* rwm,\|/{dev,run}/shm/ivshmem-\* rwm,' <<<"$profile")" = 2
check "dpkg -r ivserver" quietly inside dpkg -r ivserver
check "leaves libvirt's local abstraction without ivserver" bash -c "! grep -q ivserver $base/root$local_abstraction"
check "and libvirt's QEMU profile still compiles (the conffiles stay until purge)" \
    quietly inside apparmor_parser -Q -K /var/lib/ivs-test/domain-profile
check "dpkg --purge ivserver" quietly inside dpkg --purge ivserver
check "takes the abstractions away, and the profile compiles without them" \
    quietly inside sh -c '! ls /etc/apparmor.d/abstractions/ivserver-qemu /etc/apparmor.d/abstractions/libvirt-qemu.d/ivserver 2>/dev/null \
        && apparmor_parser -Q -K /var/lib/ivs-test/domain-profile'

# Back to Debian 12's libvirt and a fresh install: the local include again.
inside sed -i 's|^ *include if exists <abstractions/libvirt-qemu.d>|  #include <local/abstractions/libvirt-qemu>|' /etc/apparmor.d/abstractions/libvirt-qemu
check "a second install (after purge) works" quietly inside dpkg -i /var/lib/ivs-test/ivserver.deb
check "and includes ivserver's abstraction once" test "$(inside grep -c 'include <abstractions/ivserver-qemu>' "$local_abstraction")" = 1

echo "libvirt: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
