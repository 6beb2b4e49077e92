#!/usr/bin/env bash
# PXE artifacts from image/pxe.sh netbooted by qemu/run-pxe.sh: SeaBIOS -> NIC iPXE ROM ->
# QEMU DHCP/TFTP -> pxelinux.0 -> pxelinux.cfg/default -> vmlinuz + initramfs.cpio.xz.
# PXE_BOOTFILE=boot.ipxe runs the iPXE script path instead; PXE_FIRMWARE=uefi uses OVMF.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
[ -f /usr/lib/PXELINUX/pxelinux.0 ] || skip "pxelinux not installed"
if [ "${PXE_FIRMWARE:-bios}" = uefi ]; then
    [ -f /usr/share/OVMF/OVMF_CODE.fd ] || skip "ovmf not installed"
fi
begin_boot_test
make_busybox_rootfs "$TEST_TMP/rootfs" "$BOOT_OK_BODY"
KERNEL_CMDLINE_EXTRA="nomados.test=pxe" "$REPO/image/pxe.sh" "$TEST_TMP/rootfs" "$kernel" "$TEST_TMP/pxe"
for f in vmlinuz initramfs.cpio.xz pxelinux.0 ldlinux.c32 pxelinux.cfg/default boot.ipxe; do
    [ -s "$TEST_TMP/pxe/$f" ] || fail "image/pxe.sh did not produce $f"
done
start_vm "$TEST_TMP/console.log" "$REPO/qemu/run-pxe.sh" "$TEST_TMP/pxe"
assert_boot_ok "$TEST_TMP/console.log"
grep -q 'nomados.test=pxe' "$TEST_TMP/console.log" \
    || fail "KERNEL_CMDLINE_EXTRA did not reach the kernel command line"
