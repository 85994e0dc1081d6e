#!/usr/bin/env python3
"""Attach a real QEMU to a running ivserver and check what the guest sees.

Used by scripts/systemd-test.sh inside the container, against the packaged
unit. QEMU runs with the options `ivserver qemu-args` prints, its CPU
stopped (`-accel tcg -S`), driven over the qtest text protocol as the test
suite's QTest.swift does: the ivshmem-doorbell function is found on PCI bus
0, its BARs are assigned and MSI-X vector i is pointed at guest RAM, so a
delivered vector shows as a write there.

Checks, each printed as "ok: ..." (the first failure exits 1):
  - IVPosition reads 1024 (the VM's peer id) and BAR2 has the layout header;
  - bytes written through BAR2 are read back by a host client (ivctl dump);
  - a host client's interrupt (ivctl signal REGION) raises the region's
    MSI-X vector, and no other.

usage: qtest-vm.py --qemu-sock PATH --client-sock PATH [--user USER]
                   [--region NAME] [--client-user USER]
"""
import argparse
import os
import pwd
import socket
import struct
import subprocess
import sys
import tempfile
import time

REGISTERS = 0xFEB00000
MSIX_TABLE = 0xFEB01000
SHARED_MEMORY = 0x1000000000
MSI_TARGET = 0x200000
MSI_DATA = 0xC0DE0000


class QTest:
    def __init__(self, connection):
        self.connection = connection
        self.buffer = b""

    def command(self, line):
        self.connection.sendall(line.encode() + b"\n")
        while True:
            while b"\n" not in self.buffer:
                chunk = self.connection.recv(4096)
                if not chunk:
                    raise SystemExit("QEMU closed the qtest connection")
                self.buffer += chunk
            reply, self.buffer = self.buffer.split(b"\n", 1)
            reply = reply.decode()
            if reply.startswith("IRQ"):
                continue
            words = reply.split()
            if not words or words[0] != "OK":
                raise SystemExit(f"qtest '{line}' answered '{reply}'")
            return words[1:]

    def readl(self, address):
        return int(self.command(f"readl {address:#x}")[0], 16) & 0xFFFFFFFF

    def writel(self, address, value):
        self.command(f"writel {address:#x} {value:#x}")

    def read(self, address, count):
        return bytes.fromhex(self.command(f"read {address:#x} {count:#x}")[0][2:])

    def write(self, address, data):
        self.command(f"write {address:#x} {len(data):#x} 0x{data.hex()}")

    def config_read(self, slot, offset):
        self.command(f"outl 0xcf8 {0x80000000 | slot << 11 | (offset & ~3):#x}")
        return int(self.command("inl 0xcfc")[0], 16) & 0xFFFFFFFF

    def config_write(self, slot, offset, value):
        self.command(f"outl 0xcf8 {0x80000000 | slot << 11 | (offset & ~3):#x}")
        self.command(f"outl 0xcfc {value:#x}")


def set_up_device(qtest):
    """Finds 1af4:1110, assigns its BARs, enables MSI-X into guest RAM."""
    slots = [s for s in range(32) if qtest.config_read(s, 0) == 0x1110 << 16 | 0x1AF4]
    if not slots:
        raise SystemExit("no ivshmem device (1af4:1110) on PCI bus 0")
    slot = slots[0]
    qtest.config_write(slot, 0x18, 0xFFFFFFFF)
    qtest.config_write(slot, 0x1C, 0xFFFFFFFF)
    low = qtest.config_read(slot, 0x18) & ~0xF
    high = qtest.config_read(slot, 0x1C)
    size = (~(high << 32 | low) + 1) & 0xFFFFFFFFFFFFFFFF
    qtest.config_write(slot, 0x10, REGISTERS)
    qtest.config_write(slot, 0x14, MSIX_TABLE)
    qtest.config_write(slot, 0x18, (SHARED_MEMORY & 0xFFFFFFFF) | 0xC)
    qtest.config_write(slot, 0x1C, SHARED_MEMORY >> 32)
    qtest.config_write(slot, 0x04, qtest.config_read(slot, 0x04) | 0x6)
    pointer, msix = qtest.config_read(slot, 0x34) & 0xFC, None
    while pointer:
        header = qtest.config_read(slot, pointer)
        if header & 0xFF == 0x11:
            msix = pointer
        pointer = (header >> 8) & 0xFC
    if msix is None:
        raise SystemExit("the ivshmem device has no MSI-X capability")
    control = qtest.config_read(slot, msix)
    vectors = ((control >> 16) & 0x7FF) + 1
    for vector in range(vectors):
        entry = MSIX_TABLE + 16 * vector
        qtest.writel(entry, MSI_TARGET + 4 * vector)
        qtest.writel(entry + 4, 0)
        qtest.writel(entry + 8, MSI_DATA + vector)
        qtest.writel(entry + 12, 0)
        qtest.writel(MSI_TARGET + 4 * vector, 0)
    qtest.config_write(slot, msix, control | 0x80000000)
    return size, vectors


def delivered(qtest, vectors):
    seen = []
    for vector in range(vectors):
        value = qtest.readl(MSI_TARGET + 4 * vector)
        if value == MSI_DATA + vector:
            seen.append(vector)
        if value:
            qtest.writel(MSI_TARGET + 4 * vector, 0)
    return seen


def ivctl(options, *arguments):
    return subprocess.run(as_user(options.client_user, ["ivctl", *arguments, "--client-sock", options.client_sock]),
                          capture_output=True, text=True)


def check(options, device, number):
    """One round: the memory, both directions of interrupts, IVPosition.
    From the second round on, the bytes the guest wrote in the round
    before must still be there (the same memory)."""
    qtest, vectors, index, begin, data, signalled = device
    label = f"round {number}:"
    if qtest.readl(REGISTERS + 8) != 1024:
        raise SystemExit(f"{label} IVPosition changed")
    def host_sees(marker, offset):
        dump = ivctl(options, "dump", options.region, "--offset", str(offset), "--length", str(len(marker)))
        return dump.returncode == 0 and marker[:16].decode() in dump.stdout, dump.stdout + dump.stderr
    if number > 0:
        previous = f"guest bytes #{number - 1:03d}".encode()
        seen, output = host_sees(previous, data + 64 * (number - 1))
        if not seen:
            raise SystemExit(f"{label} a new host client does not see the guest's bytes of the round before: {output}")
        ok(f"{label} a new host client sees the guest's bytes of the round before: the same memory")
    marker = f"guest bytes #{number:03d}".encode()
    qtest.write(SHARED_MEMORY + begin + data + 64 * number, marker)
    seen, output = host_sees(marker, data + 64 * number)
    if not seen:
        raise SystemExit(f"{label} ivctl dump did not show the guest's bytes: {output}")
    ok(f"{label} bytes written through BAR2 read back by a host client (ivctl dump {options.region})")
    signal = ivctl(options, "signal", options.region)
    if signal.returncode != 0:
        raise SystemExit(f"{label} ivctl signal failed: {signal.stdout}{signal.stderr}")
    deadline, seen = time.monotonic() + 10, []
    while not seen and time.monotonic() < deadline:
        seen = delivered(qtest, vectors)
    if seen != [index]:
        raise SystemExit(f"{label} after ivctl signal {options.region}: vectors {seen}, expected [{index}]")
    # the guest takes the interrupt: it clears the host_to_guest word, as its
    # driver does, or the next interrupt would merge into this one
    qtest.writel(SHARED_MEMORY + begin + signalled, 0)
    ok(f"{label} a host client's interrupt (ivctl signal {options.region}) raised MSI-X vector {index} alone")
    qtest.writel(REGISTERS + 12, 0 << 16 | index)  # Doorbell: peer 0 (the host), this region's vector
    wait = ivctl(options, "wait", options.region, "--timeout", "10")
    if wait.returncode != 0:
        raise SystemExit(f"{label} the guest's Doorbell did not reach ivctl wait: {wait.stdout}{wait.stderr}")
    ok(f"{label} the guest's Doorbell reached a host client (ivctl wait {options.region})")
    print(f"{label} passed", flush=True)


def as_user(user, command):
    # setpriv execs the command itself (runuser would stay as its parent,
    # and killing runuser would leave QEMU running)
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + command if user else command


def ok(message):
    print("ok:", message, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--qemu-sock", required=True)
    parser.add_argument("--client-sock", required=True)
    parser.add_argument("--user", help="run QEMU as this user")
    parser.add_argument("--client-user", help="run ivctl as this user")
    parser.add_argument("--region", default="e2e_primary")
    parser.add_argument("--stay", action="store_true",
                        help="after the first round, run another for each line on stdin until 'quit'")
    options = parser.parse_args()

    arguments = subprocess.run(["ivserver", "qemu-args", "--qemu-sock", options.qemu_sock],
                               check=True, capture_output=True, text=True).stdout.split("\n")
    directory = tempfile.mkdtemp(prefix="ivs-qtest-")
    if options.user:
        entry = pwd.getpwnam(options.user)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    qtest_path = os.path.join(directory, "qtest.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(qtest_path)
    os.chmod(qtest_path, 0o777)
    listener.listen(1)
    listener.settimeout(30)
    log = open(os.path.join(directory, "qemu.log"), "w+")
    qemu = subprocess.Popen(as_user(options.user, [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-S", "-display", "none", "-nodefaults",
        "-qtest", f"unix:{qtest_path}", "-qtest-log", "/dev/null"] + [a for a in arguments if a]),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            log.seek(0)
            raise SystemExit("QEMU did not connect to qtest; its log:\n" + log.read())
        connection.settimeout(30)
        qtest = QTest(connection)
        size, vectors = set_up_device(qtest)
        position = qtest.readl(REGISTERS + 8)
        if position != 1024:
            raise SystemExit(f"IVPosition is {position}, not 1024")
        major, minor, total, regions = struct.unpack("<HHII", qtest.read(SHARED_MEMORY, 12))
        if (major, total) != (2, size):
            raise SystemExit(f"BAR2 starts with version {major}.{minor}, size {total}; BAR2 is {size} bytes")
        ok(f"QEMU ({'user ' + options.user if options.user else 'root'}) attached: IVPosition 1024, "
           f"BAR2 {size} bytes with layout {major}.{minor} of {regions} regions, {vectors} MSI-X vectors")

        # the region's descriptor: find it by name
        index, begin, data, signalled = None, None, None, None
        for i in range(regions):
            descriptor = qtest.read(SHARED_MEMORY + 16 + 60 * i, 60)
            name = descriptor[40:56].split(b"\0")[0].decode()
            if name == options.region:
                index = i
                begin, _, data = struct.unpack("<III", descriptor[4:16])
                signalled = struct.unpack("<I", descriptor[36:40])[0]  # host_to_guest interrupt_signalled
        if index is None:
            raise SystemExit(f"no region {options.region} in the layout")
        if delivered(qtest, vectors):
            raise SystemExit("MSI-X vectors fired before any host client rang")
        device = (qtest, vectors, index, begin, data, signalled)
        check(options, device, 0)
        if options.stay:
            # Further rounds on request, with the same VM: after a server
            # restart they show that it still shares memory and interrupts
            # with the host clients the new server serves.
            print("ready for more rounds", flush=True)
            for number, line in enumerate(sys.stdin, start=1):
                if line.strip() == "quit":
                    break
                check(options, device, number)
    finally:
        qemu.kill()
        qemu.wait()


if __name__ == "__main__":
    main()
