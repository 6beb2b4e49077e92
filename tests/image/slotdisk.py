#!/usr/bin/env python3
"""Host-side view of a NomadOS disk image's slots, for the QEMU slot tests (no root, no
loop devices). It is a second, independent implementation of the on-disk formats that
nomad-init writes (init/src/slots/): syslinux's ADV at the end of ldlinux.sys, GRUB's
environment block, the DEFAULT lines of the two loaders' configs.

  slotdisk.py IMAGE state                 print `adv=<label> grubenv=<label> syslinux=<default> grub=<default>`
  slotdisk.py IMAGE record                print PID 1's record (/nomados/slots)
  slotdisk.py IMAGE arm SLOT              record a trial of SLOT and ask both loaders to boot it once
  slotdisk.py IMAGE default SLOT          make slot-SLOT the loaders' default (a commit)
  slotdisk.py IMAGE fill-b KERNEL         slot B := a copy of slot A's root + KERNEL
  slotdisk.py IMAGE kernel-b KERNEL       put KERNEL at /nomados/b/vmlinuz (root left as is)
"""
import os
import re
import struct
import subprocess
import sys
import tempfile

SECTOR = 512
M1, M2, M3 = 0x5A2D2FA5, 0xA3041767, 0xDD28BF64


def partitions(img):
    with open(img, "rb") as f:
        f.seek(SECTOR)
        hdr = f.read(92)
        assert hdr[:8] == b"EFI PART", "no GPT header"
        lba, count, size = struct.unpack_from("<QII", hdr, 72)
        f.seek(lba * SECTOR)
        table = f.read(count * size)
    out = {}
    for i in range(count):
        e = table[i * size:(i + 1) * size]
        if e[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", e, 32)
        name = e[56:128].decode("utf-16-le").rstrip("\0")
        out[name] = (first * SECTOR, (last + 1 - first) * SECTOR)
    return out


def mtools(img, *args, **kw):
    off = partitions(img)["NOMADOS-ESP"][0]
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    return subprocess.run([args[0], "-i", f"{img}@@{off}", *args[1:]], env=env, check=True,
                          stdout=subprocess.PIPE, **kw).stdout


def adv_offset(img):
    """The ADV's two copies are the last two sectors of ldlinux.sys: find them in the ESP."""
    off, size = partitions(img)["NOMADOS-ESP"]
    with open(img, "rb") as f:
        f.seek(off)
        esp = f.read(size)
    hits = [i for i in range(0, len(esp) - 1024, SECTOR)
            if struct.unpack_from("<I", esp, i)[0] == M1
            and struct.unpack_from("<I", esp, i + 508)[0] == M3]
    pairs = [i for i in hits if i + SECTOR in hits]
    assert len(pairs) == 1, f"expected one ADV in the ESP, found {len(pairs)} at {pairs}"
    return off + pairs[0]


def adv_read(img):
    with open(img, "rb") as f:
        f.seek(adv_offset(img))
        copy = f.read(SECTOR)
    # The same check syslinux makes: the words after the head magic sum to MAGIC2.
    csum = sum(struct.unpack_from("<126I", copy, 4)) & 0xFFFFFFFF
    assert csum == M2, f"ADV checksum {csum:#x}, want {M2:#x}"
    data = copy[8:508]
    i = 0
    while i + 2 <= len(data) and data[i] != 0:
        tag, n = data[i], data[i + 1]
        if tag == 1:
            return data[i + 2:i + 2 + n].decode()
        i += 2 + n
    return ""


def adv_write(img, label):
    blk = bytearray(SECTOR)
    struct.pack_into("<I", blk, 0, M1)
    if label:
        rec = bytes([1, len(label)]) + label.encode()
        blk[8:8 + len(rec)] = rec
    struct.pack_into("<I", blk, 508, M3)
    struct.pack_into("<I", blk, 4, (M2 - sum(struct.unpack_from("<125I", blk, 8))) & 0xFFFFFFFF)
    at = adv_offset(img)
    with open(img, "r+b") as f:
        f.seek(at)
        f.write(blk + blk)


def grubenv_read(img):
    text = mtools(img, "mtype", "::/nomados/grubenv").decode()
    m = re.search(r"^next_entry=(.*)$", text, re.M)
    return m.group(1) if m else ""


def grubenv_write(img, label):
    s = "# GRUB Environment Block\nnext_entry=%s\n" % label
    put(img, "::/nomados/grubenv", (s + "#" * (1024 - len(s))).encode())


def put(img, dest, data):
    with tempfile.NamedTemporaryFile() as t:
        t.write(data)
        t.flush()
        mtools(img, "mcopy", "-o", t.name, dest)


def default_of(text, key):
    m = re.search(r"^%s(\S+)$" % re.escape(key), text, re.M)
    return m.group(1) if m else "?"


def main():
    img, cmd, *args = sys.argv[1:]
    if cmd == "record":
        sys.stdout.write(mtools(img, "mtype", "::/nomados/slots").decode())
    elif cmd == "state":
        sysl = mtools(img, "mtype", "::/syslinux.cfg").decode()
        grub = mtools(img, "mtype", "::/EFI/BOOT/grub.cfg").decode()
        print(f"adv={adv_read(img) or '-'} grubenv={grubenv_read(img) or '-'} "
              f"syslinux={default_of(sysl, 'DEFAULT ')} grub={default_of(grub, 'set default=')}")
    elif cmd == "arm":
        # As `nomad-init upgrade` does: PID 1's record first, then both loaders' marks.
        record = mtools(img, "mtype", "::/nomados/slots").decode()
        record, n = re.subn(r"^trial=.*$", "trial=" + args[0], record, flags=re.M)
        assert n == 1, f"no trial= line in the record: {record!r}"
        # nomad-init rewrites the record in place: keep its fixed size (newline padding).
        record = record.rstrip("\n") + "\n"
        record += "\n" * (1024 - len(record))
        put(img, "::/nomados/slots", record.encode())
        label = "slot-" + args[0]
        adv_write(img, label)
        grubenv_write(img, label)
    elif cmd == "default":
        label = "slot-" + args[0]
        sysl = mtools(img, "mtype", "::/syslinux.cfg").decode()
        sysl = re.sub(r"^(DEFAULT|ONERROR) \S+$", lambda m: f"{m.group(1)} {label}", sysl, flags=re.M)
        put(img, "::/syslinux.cfg", sysl.encode())
        grub = mtools(img, "mtype", "::/EFI/BOOT/grub.cfg").decode()
        grub = re.sub(r"^set (default|fallback)=\S+$", lambda m: f"set {m.group(1)}={label}", grub, flags=re.M)
        put(img, "::/EFI/BOOT/grub.cfg", grub.encode())
    elif cmd in ("fill-b", "kernel-b"):
        if cmd == "fill-b":
            parts = partitions(img)
            (a, alen), (b, blen) = parts["NOMADOS-ROOT-A"], parts["NOMADOS-ROOT-B"]
            assert alen == blen
            with open(img, "r+b") as f:
                for o in range(0, alen, 1 << 20):
                    f.seek(a + o)
                    chunk = f.read(1 << 20)
                    if chunk.strip(b"\0"):
                        f.seek(b + o)
                        f.write(chunk)
        with open(args[0], "rb") as k:
            put(img, "::/nomados/b/vmlinuz", k.read())
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
