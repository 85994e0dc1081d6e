#!/usr/bin/env python3
"""Makes a linked, stripped ELF executable the same bytes wherever it was
built (scripts/build-deb.sh, for a reproducible .deb), in place and without
moving anything (removing an allocated section would drop the binary's
GNU_RELRO segment):

  - .swift_modhash, a hash the Swift compiler keeps of each module's LLVM
    IR for incremental builds, takes in the source paths: it becomes zeros;
  - the GNU build ID, which the linker computed over those hashes, becomes
    the SHA-1 of the file as it then is (with the ID itself zeroed), so it
    still names the binary's contents.

usage: scripts/normalize-elf.py FILE...
"""
import hashlib
import struct
import sys


def sections(data):
    """(name, offset, size, type) of each section of a 64-bit little-endian ELF."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = headers[shstrndx][4]
    found = []
    for name, kind, _, _, offset, size, *_ in headers:
        end = data.index(b"\0", names_offset + name)
        found.append((data[names_offset + name:end].decode(), offset, size, kind))
    return found


def normalize(path):
    data = bytearray(open(path, "rb").read())
    by_name = {name: (offset, size, kind) for name, offset, size, kind in sections(data)}
    if ".swift_modhash" in by_name:
        offset, size, kind = by_name[".swift_modhash"]
        if kind != 8:  # not NOBITS
            data[offset:offset + size] = bytes(size)
    build_id = None
    if ".note.gnu.build-id" in by_name:
        offset, size, _ = by_name[".note.gnu.build-id"]
        namesz, descsz, note_type = struct.unpack_from("<III", data, offset)
        desc = offset + 12 + (namesz + 3) // 4 * 4
        if note_type == 3 and desc + descsz <= offset + size:
            data[desc:desc + descsz] = bytes(descsz)
            digest = hashlib.sha1(data).digest()
            build_id = (desc, (digest * (descsz // len(digest) + 1))[:descsz])
    if build_id:
        desc, value = build_id
        data[desc:desc + len(value)] = value
    open(path, "wb").write(data)


for file in sys.argv[1:]:
    normalize(file)
