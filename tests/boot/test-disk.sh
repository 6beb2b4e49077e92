#!/usr/bin/env bash
# A disk on each storage controller NomadOS supports, holding each filesystem it mounts:
# the guest finds the disk, mounts it and prints a token file. Proves the block drivers
# (virtio-blk, NVMe, AHCI, virtio-scsi, VMware pvscsi) and ext4/vfat (with the NLS the ESP needs).
#   DISK_IF=virtio|nvme|ahci|scsi|pvscsi  FS=ext4|vfat
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
fs=${FS:-ext4}
case "$fs" in
    ext4) command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 not installed (e2fsprogs)" ;;
    vfat) { command -v mkfs.vfat && command -v mcopy; } >/dev/null || skip "mkfs.vfat/mcopy not installed (dosfstools, mtools)" ;;
    *) fail "FS must be ext4 or vfat, got '$fs'" ;;
esac
begin_boot_test
token="NOMADOS-DISK-TOKEN-$fs-${DISK_IF:-virtio}-$$"
echo "$token" >"$TEST_TMP/token"
case "$fs" in
    ext4)
        mkdir "$TEST_TMP/fs" && cp "$TEST_TMP/token" "$TEST_TMP/fs/token"
        mkfs.ext4 -q -F -d "$TEST_TMP/fs" "$TEST_TMP/disk.raw" 16M
        ;;
    vfat)
        mkfs.vfat -C "$TEST_TMP/disk.raw" 16384 >/dev/null
        mcopy -i "$TEST_TMP/disk.raw" "$TEST_TMP/token" ::TOKEN.TXT
        ;;
esac
file=token
[ "$fs" = vfat ] && file=TOKEN.TXT
# shellcheck disable=SC2016 # expanded by the guest shell
body='for b in /sys/block/*; do
    case ${b##*/} in vd*|sd*|nvme*) dev=/dev/${b##*/} ;; esac
done
echo "NOMADOS-DISK dev=$dev"
mount -t '"$fs"' "$dev" /mnt && cat /mnt/'"$file"' || echo NOMADOS-MOUNT-FAILED
poweroff -f'
busybox_initramfs "$body"
DISK=$TEST_TMP/disk.raw start_vm "$TEST_TMP/console.log" \
    "$REPO/qemu/run-kernel.sh" "$kernel" "$TEST_TMP/initramfs.cpio.xz"
wait_for "$TEST_TMP/console.log" "$token|NOMADOS-MOUNT-FAILED" 40
grep -q "$token" "$TEST_TMP/console.log" || fail_log "$TEST_TMP/console.log" "guest could not mount the $fs disk on ${DISK_IF:-virtio}"
note "$(grep -m1 -o 'NOMADOS-DISK dev=.*' "$TEST_TMP/console.log" | tr -d '\r') ($fs)"
