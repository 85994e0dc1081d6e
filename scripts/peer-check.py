#!/usr/bin/env python3
"""Checks a multi-peer ivshmem server (QEMU's ivshmem-server protocol) as two
raw peers would: both join, each gets version 0, its own ID, the memory and
its vectors; the first is told of the second with the second's own eventfds
(checked by ringing them); when the second leaves, the first is told.
Exit 0 when all holds, 1 with the reason otherwise.

usage: peer-check.py SOCKET VECTORS"""
import array
import os
import socket
import struct
import sys


def receive(peer):
    """One message: (value, fd or None)."""
    data, ancillary, _, _ = peer.recvmsg(8, socket.CMSG_SPACE(4 * 4))
    if len(data) < 8:
        raise SystemExit(f"the server closed the connection (got {len(data)} bytes)")
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % 4])
    if len(fds) > 1:
        raise SystemExit(f"a message carried {len(fds)} fds")
    return struct.unpack("<q", data)[0], (fds[0] if fds else None)


def expect(condition, message):
    if not condition:
        raise SystemExit("peer-check: " + message)


def join(path, vectors, others):
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.settimeout(10)
    peer.connect(path)
    version, fd = receive(peer)
    expect(version == 0 and fd is None, f"version {version}, expected 0")
    own, fd = receive(peer)
    expect(0 <= own <= 65535 and fd is None, f"ID {own}")
    marker, memory = receive(peer)
    expect(marker == -1 and memory is not None, "no shared memory after the ID")
    told = {}
    for _ in range(others * vectors):
        value, fd = receive(peer)
        expect(fd is not None and value != own, f"another peer's vector without an fd ({value})")
        told.setdefault(value, []).append(fd)
    mine = []
    for _ in range(vectors):
        value, fd = receive(peer)
        expect(value == own and fd is not None, f"own vector: {value}")
        mine.append(fd)
    return peer, own, memory, told, mine


def same_eventfd(a, b):
    os.write(a, struct.pack("<Q", 1))
    return struct.unpack("<Q", os.read(b, 8))[0] == 1


def main():
    path, vectors = sys.argv[1], int(sys.argv[2])
    first, first_id, memory, _, first_vectors = join(path, vectors, 0)
    second, second_id, _, told, _ = join(path, vectors, 1)
    expect(first_id != second_id, "two peers with one ID")
    expect(list(told) == [first_id], f"the second was told of {list(told)}")
    for vector in range(vectors):
        expect(same_eventfd(told[first_id][vector], first_vectors[vector]), f"vector {vector} is not the first's eventfd")
    joined = [receive(first) for _ in range(vectors)]
    expect(all(value == second_id and fd is not None for value, fd in joined), "the first was not told of the second")
    second.close()
    value, fd = receive(first)
    expect(value == second_id and fd is None, f"after the second left the first got {value} (fd {fd})")
    size = os.fstat(memory).st_size
    print(f"peers {first_id} and {second_id} joined, rang and left; memory {size} bytes, {vectors} vectors")


if __name__ == "__main__":
    main()
