#!/usr/bin/env bash
# Refuses a disk image whose data partition (GPT name NOMADOS-DATA) holds anything but an
# empty ext4: a shipped image must not carry a Nomad node ID, Raft state or an ACL token
# (every machine made from it would share them). Booting the image itself instead of an
# overlay is how they get there; see docs/security.md.
#
#   image/check-data-empty.sh out/nomados.raw      (or .qcow2/.vmdk/.vhd: converted first)
#
# Exit: 0 empty, 1 not empty or unreadable (the reason on stderr), 77 a tool is missing.
set -euo pipefail

die() { printf 'check-data-empty: %s\n' "$*" >&2; exit 1; }
[ $# -eq 1 ] || { echo "usage: $0 IMAGE" >&2; exit 2; }
img=$1
[ -f "$img" ] || die "$img: no such file"
for t in sfdisk debugfs e2fsck python3; do
    command -v "$t" >/dev/null || { echo "SKIP: $t not installed" >&2; exit 77; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nomados-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
raw=$img
case $img in
    *.raw | *.img) ;;
    *)
        command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed" >&2; exit 77; }
        qemu-img convert -O raw "$img" "$work/disk.raw" || die "$img: qemu-img cannot read it"
        raw=$work/disk.raw
        ;;
esac

# Start and size (512-byte sectors) of the partition named NOMADOS-DATA.
read -r start size < <(sfdisk --json "$raw" 2>/dev/null | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"].get("partitions", [])
data = [p for p in parts if p.get("name") == "NOMADOS-DATA"]
print(" ".join(str(data[0][k]) for k in ("start", "size")) if data else "")
') || true
[ -n "${start:-}" ] || die "$img: no GPT partition named NOMADOS-DATA"
dd if="$raw" of="$work/data.ext4" bs=512 skip="$start" count="$size" conv=sparse status=none ||
    die "$img: cannot read the data partition"
e2fsck -fn "$work/data.ext4" >"$work/fsck.log" 2>&1 ||
    die "$img: the data partition is not a clean ext4: $(tail -3 "$work/fsck.log" | paste -sd' ')"

# `ls -p` lines are /inode/mode/uid/gid/name/size/: anything besides . .. lost+found (and an
# empty lost+found) is something a boot or a build left behind.
names() { debugfs -R "ls -p $1" "$work/data.ext4" 2>/dev/null | awk -F/ 'NF > 5 { print $6 }'; }
extra=$(names / | grep -vxE '\.|\.\.|lost\+found' || true)
lost=$(names /lost+found | grep -vxE '\.|\.\.' || true)
if [ -n "$extra$lost" ]; then
    die "$img: the data partition is not empty: $(printf '%s\n' $extra ${lost:+lost+found/$lost} | paste -sd' ') (was the image booted in place? build it again; boot copies or overlays)"
fi
echo "check-data-empty: $img: the data partition is an empty ext4"
