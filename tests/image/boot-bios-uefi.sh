#!/usr/bin/env bash
# Boot test: build ONE image with a test PID 1 (tests/image/test-init.sh, no Nomad) and boot
# it twice through qemu/run-bios.sh (SeaBIOS: gptmbr.bin -> syslinux on the ESP) and
# qemu/run-uefi.sh (OVMF: BOOTX64.EFI = syslinux.efi). Each boot must print the token naming
# the firmware that booted it. A boot-loader fault shows here apart from any PID 1 problem;
# tests/e2e boots the same layout with the real nomad-init.
#
# Environment: KERNEL (default: the cached build; skip if none), DISK_IF (see qemu/common.sh),
# QEMU_ACCEL (kvm|tcg; default probe), KEEP=1 keeps the work directory.
# Exit: 0 = both booted, 1 = a boot failed, 77 = skipped (prerequisite missing).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../qemu/common.sh
. "$REPO/qemu/common.sh"
# shellcheck source=../lib/vm.sh
. "$REPO/tests/lib/vm.sh"
TOKEN=NOMADOS-TEST-BOOT-OK

say() { printf 'boot-test: %s\n' "$*"; }

command -v "$QEMU" >/dev/null || skip "$QEMU not installed"
[ -f "${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}" ] || skip "OVMF not installed (apt-get install ovmf)"
kernel=$(cached_kernel) || exit $?
say "kernel $kernel"
nomados_qemu_accel

work=$(mktemp -d /tmp/nomados-boot.XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

say "building the image (TEST_INIT, no Nomad, qcow2)"
OUT=$work/out KERNEL=$kernel TEST_INIT=$REPO/tests/image/test-init.sh NOMAD_BIN=none \
    TOOLBOX=1 FORMATS=qcow2 "$REPO/buildimg.sh" >"$work/build.log" 2>&1 || {
    tail -20 "$work/build.log" >&2
    fail "image build failed (log: $work/build.log)"
}
image=$work/out/nomados.qcow2

# boot FIRMWARE (in a subshell: a failure ends only this boot): the token must name FIRMWARE.
# SNAPSHOT=1: the boots never write the image, so both see the same bytes.
boot() {
    local fw=$1 log=$work/serial-$1.log start=$SECONDS line
    : >"$log"
    SNAPSHOT=1 CONSOLE_LOG=$log NOMAD_PORT=$(free_port) "$REPO/qemu/run-$fw.sh" "$image" &
    VM_PID=$!
    trap 'stop_vm' EXIT
    wait_for "$log" "$TOKEN firmware=[a-z]+ " 40
    line=$(grep -a -m1 "$TOKEN" "$log" | tr -d '\r')
    [[ "$line" == *"firmware=$fw "* ]] || fail_log "$log" "booted with $fw, but the guest says: $line"
    say "PASS $fw in $((SECONDS - start))s: $line"
}

rc=0
(boot bios) || rc=1
(boot uefi) || rc=1
[ "$rc" = 0 ] && say "both firmware paths booted the same image" || KEEP=1
exit "$rc"
