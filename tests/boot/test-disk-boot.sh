#!/usr/bin/env bash
# qemu/run-bios.sh and qemu/run-uefi.sh boot a disk: an MBR disk with one FAT partition that
# carries the kernel, the busybox initramfs and syslinux for both firmwares (BIOS: mbr.bin +
# ldlinux.sys; UEFI: \EFI\BOOT\BOOTX64.EFI = syslinux.efi). This proves the scripts, the
# firmware wiring (SeaBIOS; OVMF with its variable store) and the EFI-stub-capable kernel.
# The real NomadOS disk image is built by buildimg.sh and has its own tests.
#   FIRMWARE=bios|uefi
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
firmware=${FIRMWARE:-bios}
mbr=/usr/lib/syslinux/mbr/mbr.bin
efi=/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi
ldlinux_e64=/usr/lib/syslinux/modules/efi64/ldlinux.e64
for t in syslinux mkfs.vfat mcopy mmd sfdisk; do
    command -v "$t" >/dev/null || skip "$t not installed (syslinux, dosfstools, mtools, fdisk)"
done
[ -f "$mbr" ] || skip "$mbr not found (syslinux-common)"
if [ "$firmware" = uefi ]; then
    { [ -f "$efi" ] && [ -f "$ldlinux_e64" ]; } || skip "syslinux.efi/ldlinux.e64 not found (syslinux-efi)"
    [ -f /usr/share/OVMF/OVMF_CODE.fd ] || skip "ovmf not installed"
fi
begin_boot_test
busybox_initramfs "$BOOT_OK_BODY"

cat >"$TEST_TMP/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT nomados
PROMPT 0
TIMEOUT 0
LABEL nomados
  LINUX /vmlinuz
  INITRD /initramfs.cpio.xz
  APPEND $NOMADOS_CMDLINE_BASE nomados.test=$firmware-disk
CFG
fat=$TEST_TMP/fat.img
mkfs.vfat -C "$fat" 32768 >/dev/null
mcopy -i "$fat" "$kernel" ::vmlinuz
mcopy -i "$fat" "$TEST_TMP/initramfs.cpio.xz" ::initramfs.cpio.xz
mcopy -i "$fat" "$TEST_TMP/syslinux.cfg" ::syslinux.cfg
if [ "$firmware" = uefi ]; then
    mmd -i "$fat" ::EFI ::EFI/BOOT
    mcopy -i "$fat" "$efi" ::EFI/BOOT/BOOTX64.EFI
    mcopy -i "$fat" "$ldlinux_e64" ::EFI/BOOT/ldlinux.e64
    mcopy -i "$fat" "$TEST_TMP/syslinux.cfg" ::EFI/BOOT/syslinux.cfg
else
    syslinux --install "$fat"
fi
disk=$TEST_TMP/disk.raw
truncate -s 40M "$disk"
printf 'label: dos\nstart=2048, type=c, bootable\n' | sfdisk -q "$disk"
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$fat" of="$disk" bs=1M seek=1 conv=notrunc status=none

start_vm "$TEST_TMP/console.log" "$REPO/qemu/run-$firmware.sh" "$disk"
assert_boot_ok "$TEST_TMP/console.log"
grep -q "nomados.test=$firmware-disk" "$TEST_TMP/console.log" \
    || fail "the guest did not boot with the disk's syslinux.cfg command line"
