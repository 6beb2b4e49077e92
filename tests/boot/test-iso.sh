#!/usr/bin/env bash
# The hybrid ISO from image/iso.sh boots to PID 1: SeaBIOS or OVMF (ISO_FIRMWARE), from a CD
# drive or as a disk like a USB stick (ISO_AS). PID 1 here is the busybox test init of the
# PXE test; the ISO carries the same kernel + initramfs as the PXE artifacts. Boot loaders:
# isolinux for BIOS, GRUB for UEFI (CD and stick). With ISO_AS=usb the stick hangs off QEMU's
# xHCI controller, and the guest must also find it as a USB disk holding this ISO's ISO 9660
# file system: the kernel's xHCI + usb-storage path an installer booted from a stick reads.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || skip "isolinux not installed"
command -v xorriso >/dev/null || skip "xorriso not installed"
[ -f /usr/lib/grub/x86_64-efi/iso9660.mod ] || skip "grub-efi-amd64-bin not installed"
if [ "${ISO_FIRMWARE:-bios}" = uefi ]; then
    [ -f /usr/share/OVMF/OVMF_CODE.fd ] || skip "ovmf not installed"
fi
begin_boot_test
body=$BOOT_OK_BODY
if [ "${ISO_AS:-cdrom}" = usb ]; then
    # USB enumeration is asynchronous: wait for a disk on the USB bus (60 s, TCG-sized).
    body='echo NOMADOS-BOOT-OK
i=0
while [ $i -lt 60 ]; do
    for d in /sys/block/sd*; do
        case "$(readlink -f "$d")" in */usb*) dev=/dev/${d##*/} ;; esac
    done
    [ -n "$dev" ] && break
    sleep 1; i=$((i + 1))
done
if [ -n "$dev" ] && mount -t iso9660 -o ro "$dev" /mnt && ls /mnt/boot/nomados-* >/dev/null; then
    echo "NOMADOS-USB-ISO $dev $(ls /mnt/boot/nomados-*)"
    umount /mnt
else
    echo "NOMADOS-USB-ISO-MISSING"; ls -l /sys/block
fi
'$BOOT_OK_BODY
fi
make_busybox_rootfs "$TEST_TMP/rootfs" "$body"
"$REPO/image/pxe.sh" "$TEST_TMP/rootfs" "$kernel" "$TEST_TMP/pxe" 2>/dev/null
KERNEL_CMDLINE_EXTRA="nomados.test=iso" BOOT_TIMEOUT=1 \
    "$REPO/image/iso.sh" "$TEST_TMP/pxe" - "$TEST_TMP/nomados.iso"
# Hybrid: an MBR for BIOS USB boots and a GPT whose EFI System Partition is the EFI image.
python3 - "$TEST_TMP/nomados.iso" <<'PY' || fail "the ISO is not hybrid (no MBR mark or no EFI System Partition)"
import sys
b = open(sys.argv[1], "rb").read(64 * 1024)
assert b[510:512] == b"\x55\xaa", "no MBR boot mark"
assert b[0x8001:0x8006] == b"CD001", "no ISO 9660 volume descriptor"
assert b"EFI PART" in (b[512:520], b[2048:2056]), "no GPT header"
PY
start_vm "$TEST_TMP/console.log" "$REPO/qemu/run-iso.sh" "$TEST_TMP/nomados.iso"
assert_boot_ok "$TEST_TMP/console.log"
if [ "${ISO_AS:-cdrom}" = usb ]; then
    id=$(cd "$TEST_TMP" && xorriso -indev nomados.iso -find /boot -name 'nomados-*' 2>/dev/null |
        tr -d "'" | head -n1)
    [ -n "$id" ] || fail "no /boot/nomados-<id> file in the ISO"
    grep -q "NOMADOS-USB-ISO /dev/sd[a-z]* /mnt$id" "$TEST_TMP/console.log" ||
        fail_log "$TEST_TMP/console.log" "the kernel did not find the USB stick's ISO 9660 file system ($id)"
fi
grep -q 'nomados.test=iso' "$TEST_TMP/console.log" \
    || fail "the ISO's kernel command line did not reach the kernel"
