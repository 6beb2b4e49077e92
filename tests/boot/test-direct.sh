#!/usr/bin/env bash
# Kernel + busybox initramfs booted directly (-kernel/-initrd): proves the kernel config
# (console, initramfs xz, devtmpfs, virtio-net, AF_PACKET for DHCP) and mkinitramfs.py.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
begin_boot_test
busybox_initramfs "$BOOT_OK_BODY"
start_vm "$TEST_TMP/console.log" "$REPO/qemu/run-kernel.sh" "$kernel" "$TEST_TMP/initramfs.cpio.xz"
assert_boot_ok "$TEST_TMP/console.log"
