#!/usr/bin/env bash
# Slot trial test (issue 11): the one-shot "try slot B once, else A" of docs/image.md, on the
# same image under SeaBIOS (syslinux ADV BOOTONCE) and OVMF (GRUB grubenv next_entry).
#
# Per firmware, on a private copy of one image built with the test PID 1
# (tests/image/test-init.sh, which prints the slot it runs in and powers off):
#   rollback  slot B gets a kernel but no root filesystem and is armed for one trial: its
#             kernel panics (panic=10 reboots), and with no help the machine boots slot A
#             within a bounded time; the loader's one-shot mark is gone from the disk.
#   commit    slot B gets a copy of slot A's root and is armed: the trial boots B once; a
#             commit (DEFAULT/default lines set to B, what nomad-init writes) makes B stay on
#             the next boot.
# The disk is edited between boots from the host by tests/image/slotdisk.py, an
# implementation of the on-disk formats independent of init/src/slots.
#
# Environment: KERNEL (default: the cached build; skip if none), QEMU_ACCEL, KEEP=1,
# FIRMWARES (default "bios uefi"). Exit: 0 pass, 1 fail, 77 skipped.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../qemu/common.sh
. "$REPO/qemu/common.sh"
# shellcheck source=../lib/vm.sh
. "$REPO/tests/lib/vm.sh"
TOKEN=NOMADOS-TEST-BOOT-OK
# From power-on of a doomed trial to slot A's PID 1: two firmware + loader passes, the
# panicking kernel, panic=10. Multiplied by TIMEOUT_SCALE on TCG.
ROLLBACK_LIMIT=${ROLLBACK_LIMIT:-30}
SLOTDISK="python3 $REPO/tests/image/slotdisk.py"

say() { printf 'slots-trial: %s\n' "$*"; }

command -v "$QEMU" >/dev/null || skip "$QEMU not installed"
command -v mtype >/dev/null || skip "mtools not installed"
[ -f "${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}" ] || skip "OVMF not installed (apt-get install ovmf)"
kernel=$(cached_kernel) || exit $?
nomados_qemu_accel

work=$(mktemp -d /tmp/nomados-slots.XXXXXX)
cleanup() { stop_vm; if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

say "building the image (TEST_INIT, no Nomad, raw)"
OUT=$work/out KERNEL=$kernel TEST_INIT=$REPO/tests/image/test-init.sh NOMAD_BIN=none \
    TOOLBOX=1 FORMATS=raw "$REPO/buildimg.sh" >"$work/build.log" 2>&1 || {
    tail -20 "$work/build.log" >&2
    fail "image build failed (log: $work/build.log)"
}

# boot FW IMAGE LOG SECONDS: boot until the test PID 1's token, then until it powers off.
# Sets TOOK to the seconds from QEMU start to the token.
boot() {
    local fw=$1 img=$2 log=$3 limit=$4 start=$SECONDS
    : >"$log"
    CONSOLE_LOG=$log NOMAD_PORT=$(free_port) DISK_MODE=in-place "$REPO/qemu/run-$fw.sh" "$img" \
        >>"$log.qemu" 2>&1 &
    VM_PID=$!
    wait_for "$log" "$TOKEN firmware=[a-z]+ .*slot=[a-z]" "$limit"
    TOOK=$((SECONDS - start))
    wait_exit 60 || fail_log "$log" "the test PID 1 printed its token but QEMU did not exit"
    VM_PID=
}

token_slot() { grep -a -m1 "$TOKEN" "$1" | tr -d '\r' | sed -n 's/.* slot=\([a-z]*\).*/\1/p'; }

# expect_state IMAGE REGEX WHAT
expect_state() {
    local s
    s=$($SLOTDISK "$1" state) || fail "reading the slot state of $1 failed"
    [[ "$s" =~ $2 ]] || fail "$3: disk state is '$s', expected /$2/"
    say "  disk: $s"
}

# The mark the firmware's loader consumes itself; the other loader's stays.
consumed() { case $1 in bios) echo 'adv=- ' ;; uefi) echo 'grubenv=- ' ;; esac; }

one_firmware() {
    local fw=$1 img log slot
    trap stop_vm EXIT  # a failure ends this subshell; its VM must not outlive it
    say "== $fw: a trial of a slot whose kernel cannot mount its root rolls back by itself"
    img=$work/$fw-rollback.raw
    cp --sparse=always "$work/out/nomados.raw" "$img"
    $SLOTDISK "$img" kernel-b "$kernel" || fail "putting slot B's kernel on the ESP failed"
    $SLOTDISK "$img" arm b || fail "arming the trial failed"
    expect_state "$img" '^adv=slot-b grubenv=slot-b syslinux=slot-a grub=slot-a$' "armed"
    log=$work/$fw-rollback.log
    boot "$fw" "$img" "$log" "$ROLLBACK_LIMIT"
    slot=$(token_slot "$log")
    [ "$slot" = a ] || fail_log "$log" "after the failed trial the machine runs slot '$slot', not a"
    grep -aq 'Command line:.*nomados\.slot=b' "$log" ||
        fail_log "$log" "slot B's kernel never started: the trial was not tried"
    grep -aqE 'Kernel panic|VFS: Unable to mount root' "$log" ||
        fail_log "$log" "slot B's kernel did not fail as this test arranged"
    expect_state "$img" "$(consumed "$fw").*syslinux=slot-a grub=slot-a$" "after the rollback"
    say "PASS $fw rollback: trial of B panicked, back on slot A ${TOOK}s after power-on"

    say "== $fw: a trial that is committed stays"
    img=$work/$fw-commit.raw
    cp --sparse=always "$work/out/nomados.raw" "$img"
    $SLOTDISK "$img" fill-b "$kernel" || fail "filling slot B failed"
    $SLOTDISK "$img" arm b || fail "arming the trial failed"
    log=$work/$fw-trial.log
    boot "$fw" "$img" "$log" 60
    slot=$(token_slot "$log")
    [ "$slot" = b ] || fail_log "$log" "the trial boot ran slot '$slot', not b"
    expect_state "$img" "$(consumed "$fw").*syslinux=slot-a grub=slot-a$" "after the trial boot"
    $SLOTDISK "$img" default b || fail "committing slot B failed"
    log=$work/$fw-committed.log
    boot "$fw" "$img" "$log" 60
    slot=$(token_slot "$log")
    [ "$slot" = b ] || fail_log "$log" "after the commit the machine runs slot '$slot', not b"
    say "PASS $fw commit: trial booted B once, committed B boots again"
}

rc=0
for fw in ${FIRMWARES:-bios uefi}; do
    (one_firmware "$fw") || rc=1
done
[ "$rc" = 0 ] && say "all passed" || KEEP=1
exit "$rc"
