#!/usr/bin/env python3
"""Write a directory tree as a Linux initramfs: newc cpio, xz with CRC32 (stdlib + xz(1)).

usage: mkinitramfs.py [--no-compress] <rootfs-dir> <out.cpio.xz>

Runs without root: every entry is owned by 0:0 whoever owns the files, and the device nodes
the kernel needs before /init runs (/dev/console, /dev/null) are written into the archive
instead of being created on disk. If the tree has no /init, /init becomes a symlink to
/sbin/init. Entries are sorted and mtimes come from SOURCE_DATE_EPOCH (default 0), so the
same tree gives the same archive. The output is written to a temporary file and renamed.
"""
import os
import stat
import subprocess
import sys
import tempfile

# Kernel's initramfs xz decoder only verifies CRC32 (not the default CRC64).
XZ_ARGS = ["xz", "--check=crc32", "--compress", "--stdout"]

# (path, mode, major, minor) of nodes the kernel opens before /init can mount devtmpfs.
DEVICE_NODES = [("dev/console", stat.S_IFCHR | 0o600, 5, 1), ("dev/null", stat.S_IFCHR | 0o666, 1, 3)]


class Writer:
    def __init__(self, out, mtime):
        self.out = out
        self.mtime = mtime
        self.ino = 1
        self.offset = 0

    def _write(self, data):
        self.out.write(data)
        self.offset += len(data)

    def _pad(self):
        self._write(b"\0" * (-self.offset % 4))

    def entry(self, name, mode, data=b"", rdev=(0, 0)):
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, self.mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self._write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self._write(encoded)
        self._pad()
        self._write(data)
        self._pad()

    def trailer(self):
        self.ino = 0
        self.entry("TRAILER!!!", 0)
        self._write(b"\0" * (-self.offset % 512))


def walk(root):
    """Relative paths below root (not root itself), parents before children, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            yield name if rel == "." else os.path.join(rel, name)


def archive(root, out, mtime):
    w = Writer(out, mtime)
    present = set()
    for rel in walk(root):
        path = os.path.join(root, rel)
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            with open(path, "rb") as f:
                w.entry(rel, mode, f.read())
        elif stat.S_ISLNK(mode):
            w.entry(rel, mode, os.readlink(path).encode())
        elif stat.S_ISDIR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            w.entry(rel, mode)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            w.entry(rel, mode, rdev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
        else:
            raise SystemExit(f"mkinitramfs.py: {path}: unsupported file type {oct(mode)}")
        present.add(rel)
    if "dev" not in present:
        w.entry("dev", stat.S_IFDIR | 0o755)
    for rel, mode, major, minor in DEVICE_NODES:
        if rel not in present:
            w.entry(rel, mode, rdev=(major, minor))
    if "init" not in present:
        if "sbin/init" not in present:
            raise SystemExit(f"mkinitramfs.py: {root} has neither /init nor /sbin/init; the kernel would have nothing to run")
        w.entry("init", stat.S_IFLNK | 0o777, b"/sbin/init")
    w.trailer()


def main(argv):
    compress = True
    if argv and argv[0] == "--no-compress":
        compress = False
        argv = argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root, dest = argv
    if not os.path.isdir(root):
        print(f"mkinitramfs.py: rootfs directory {root} not found", file=sys.stderr)
        return 1
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    fd, tmp = tempfile.mkstemp(prefix=".mkinitramfs.", dir=os.path.dirname(os.path.abspath(dest)))
    try:
        with os.fdopen(fd, "wb") as out:
            if compress:
                xz = subprocess.Popen(XZ_ARGS, stdin=subprocess.PIPE, stdout=out)
                try:
                    archive(root, xz.stdin, mtime)
                finally:
                    xz.stdin.close()
                if xz.wait() != 0:
                    raise SystemExit(f"mkinitramfs.py: xz failed with exit status {xz.returncode}")
            else:
                archive(root, out, mtime)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
