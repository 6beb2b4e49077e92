#!/usr/bin/env bash
# QEMU boot tests. Prints one line per test and exits non-zero if any failed.
#   tests/boot/run.sh                 all tests
#   tests/boot/run.sh direct pxe      only these (names without test- and .sh)
# Environment: NOMADOS_KERNEL (use this bzImage instead of kernel-config/build.sh),
# QEMU_ACCEL (kvm|tcg), and everything qemu/common.sh reads.
set -uo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../qemu/common.sh
. "$dir/../../qemu/common.sh"

# Build (or fetch from the cache) the kernel once, before the first test that boots it, so
# per-test output stays readable.
prepare_qemu() {
    [ -n "${prepared:-}" ] && return 0
    prepared=1
    if [ -z "${NOMADOS_KERNEL:-}" ]; then
        NOMADOS_KERNEL=$("$dir/../../kernel-config/build.sh") || { echo "FAIL kernel build"; exit 1; }
        export NOMADOS_KERNEL
    fi
    nomados_qemu_accel
    echo "boot tests: kernel $NOMADOS_KERNEL, accel $NOMADOS_ACCEL (timeouts x$TIMEOUT_SCALE)"
}

# name:script:environment (config-check needs no kernel and no QEMU)
tests=(
    "config-check:test-config-check.sh:"
    "direct:test-direct.sh:"
    "pxe-pxelinux:test-pxe.sh:"
    "pxe-ipxe:test-pxe.sh:PXE_BOOTFILE=boot.ipxe"
    "pxe-ipxe-uefi:test-pxe.sh:PXE_BOOTFILE=boot.ipxe PXE_FIRMWARE=uefi"
    "iso-cd-bios:test-iso.sh:ISO_FIRMWARE=bios"
    "iso-cd-uefi:test-iso.sh:ISO_FIRMWARE=uefi"
    "iso-usb-bios:test-iso.sh:ISO_FIRMWARE=bios ISO_AS=usb"
    "iso-usb-uefi:test-iso.sh:ISO_FIRMWARE=uefi ISO_AS=usb"
    "iso-disk-uefi:test-iso.sh:ISO_FIRMWARE=uefi ISO_AS=disk"
    "disk-boot-bios:test-disk-boot.sh:FIRMWARE=bios"
    "disk-boot-uefi:test-disk-boot.sh:FIRMWARE=uefi"
    "powerdown:test-powerdown.sh:"
    "nic-e1000e:test-direct.sh:NIC_MODEL=e1000e"
    "nic-vmxnet3:test-direct.sh:NIC_MODEL=vmxnet3"
    "disk-virtio-ext4:test-disk.sh:DISK_IF=virtio FS=ext4"
    "disk-nvme-ext4:test-disk.sh:DISK_IF=nvme FS=ext4"
    "disk-ahci-vfat:test-disk.sh:DISK_IF=ahci FS=vfat"
    "disk-scsi-ext4:test-disk.sh:DISK_IF=scsi FS=ext4"
    "disk-pvscsi-ext4:test-disk.sh:DISK_IF=pvscsi FS=ext4"
    "machine-config:test-machine-config.sh:"
    "tls:test-tls.sh:"
)
selected=("$@")
passed=0 failed=0 skipped=0
for t in "${tests[@]}"; do
    IFS=: read -r name script envs <<<"$t"
    if [ ${#selected[@]} -gt 0 ]; then
        match=0
        for s in "${selected[@]}"; do [ "$s" = "$name" ] && match=1; done
        [ $match = 1 ] || continue
    fi
    [ "$name" = config-check ] || prepare_qemu
    out=$(mktemp)
    start=$SECONDS
    # shellcheck disable=SC2086 # envs is a list of NAME=value words
    env $envs bash "$dir/$script" >"$out" 2>&1
    rc=$?
    took=$((SECONDS - start))
    case $rc in
        0) echo "PASS $name (${took}s)"; passed=$((passed + 1)) ;;
        77) echo "SKIP $name: $(grep -m1 '^SKIP:' "$out" | sed 's/^SKIP: //')"; skipped=$((skipped + 1)) ;;
        *) echo "FAIL $name (${took}s, exit $rc)"; sed 's/^/    /' "$out"; failed=$((failed + 1)) ;;
    esac
    [ "${VERBOSE:-0}" = 1 ] && [ $rc = 0 ] && sed 's/^/    /' "$out"
    rm -f "$out"
done
echo "boot tests: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
