#!/usr/bin/env bash
# Boot figures (not a test: prints numbers, asserts nothing):
#   bzImage size, time from QEMU start to the /init token and to power-off, for a direct
#   -kernel/-initrd boot and for the pxelinux netboot. RUNS=n (default 3) per path.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
begin_boot_test
runs=${RUNS:-3}
POLL_INTERVAL=0.05  # timing resolution of wait_for/wait_exit
busybox_initramfs "$BOOT_OK_BODY"
"$REPO/image/pxe.sh" "$TEST_TMP/rootfs" "$kernel" "$TEST_TMP/pxe" 2>/dev/null

printf 'accel          %s\n' "$NOMADOS_ACCEL"
printf 'bzImage        %s bytes\n' "$(stat -c %s "$kernel")"
printf 'initramfs      %s bytes (busybox only)\n' "$(stat -c %s "$TEST_TMP/initramfs.cpio.xz")"

# time_boot NAME CMD...: seconds to NOMADOS-BOOT-OK and to QEMU exit, RUNS times.
time_boot() {
    local name=$1 i t0 tok off
    shift
    for ((i = 1; i <= runs; i++)); do
        t0=$(date +%s.%N)
        start_vm "$TEST_TMP/console.log" "$@"
        wait_for "$TEST_TMP/console.log" NOMADOS-BOOT-OK 60
        tok=$(date +%s.%N)
        wait_exit 60 || fail "$name: guest did not power off"
        off=$(date +%s.%N)
        printf '%-14s run %d: token %.2fs, power-off %.2fs\n' "$name" "$i" \
            "$(echo "$tok - $t0" | bc)" "$(echo "$off - $t0" | bc)"
    done
}
time_boot direct "$REPO/qemu/run-kernel.sh" "$kernel" "$TEST_TMP/initramfs.cpio.xz"
time_boot pxe-pxelinux "$REPO/qemu/run-pxe.sh" "$TEST_TMP/pxe"
