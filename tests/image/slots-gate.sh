#!/usr/bin/env bash
# PID 1's side of the slots (issue 11), with the real nomad-init and the Nomad test double:
#
#   commit    slot B = a copy of slot A, armed for one trial: the trial boot runs B, PID 1
#             says TRIAL BOOT, its health gate passes (Nomad healthy, node ready, pack set
#             applied) and it commits: both loaders' defaults and PID 1's record say B, and
#             the next boot runs B as the default with the data partition kept (boot 2).
#   fellback  slot B = a kernel without a root filesystem, armed: it panics, the loader goes
#             back to A, and PID 1 on A records why (UPGRADE ROLLED BACK on the console, the
#             record's rolled_back) and clears the other loader's stale mark.
#
# Both under SeaBIOS and OVMF (FIRMWARES="bios uefi"): on BIOS, PID 1 clears GRUB's stale
# mark; on UEFI, syslinux's ADV inside ldlinux.sys on the mounted FAT. The disk is armed from
# the host by tests/image/slotdisk.py. Environment: KERNEL, QEMU_ACCEL, KEEP=1,
# NOMAD_BIN (default: the test double). Exit: 0 pass, 1 fail, 77 skipped.
set -uo pipefail
# shellcheck source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
SLOTDISK="python3 $REPO/tests/image/slotdisk.py"
say() { printf 'slots-gate: %s\n' "$*"; }

( e2e_require ) || exit $?
command -v mtype >/dev/null || skip "mtools not installed"
kernel=$(cached_kernel) || exit $?
nomados_qemu_accel
nomad=$(e2e_nomad_bin) || exit 1

work=$(mktemp -d /tmp/nomados-slots-gate.XXXXXX)
cleanup() { stop_vm; if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

say "building the image (nomad-init, $(basename "$nomad"), packs, raw)"
OUT=$work/out KERNEL=$kernel NOMAD_BIN=$nomad FORMATS=raw TOOLBOX=1 \
    "$REPO/buildimg.sh" >"$work/build.log" 2>&1 ||
    { tail -20 "$work/build.log" >&2; fail "buildimg.sh failed (log: $work/build.log)"; }

# boot IMAGE LOG: start the VM on IMAGE (in place) with its console in LOG.
boot() {
    : >"$2"
    CONSOLE_LOG=$2 NOMAD_PORT=$(free_port) DISK_MODE=in-place "$REPO/qemu/run-$fw.sh" "$1" \
        >>"$2.qemu" 2>&1 &
    VM_PID=$!
}
# The guest fsyncs what it writes on the ESP; give QEMU a moment, then stop it.
halt() { sleep 2; stop_vm; VM_PID=; }
record() { $SLOTDISK "$1" record; }

one_firmware() {
    local fw=$1 img log start state rec
    trap stop_vm EXIT  # a failure ends this subshell; its VM must not outlive it
    say "== $fw commit: a healthy trial of slot B is committed by PID 1 and stays"
    img=$work/$fw-commit.raw
    cp --sparse=always "$work/out/nomados.raw" "$img"
    $SLOTDISK "$img" fill-b "$kernel" && $SLOTDISK "$img" arm b || fail "arming slot B failed"
    log=$work/$fw-commit-trial.log
    boot "$img" "$log"
    start=$SECONDS
    wait_for "$log" 'TRIAL BOOT of slot b' 120
    wait_for "$log" 'UPGRADE COMMITTED: slot b' 240
    say "  trial boot committed $((SECONDS - start))s after power-on"
    grep -aq 'boot 1 of this data partition' "$log" || fail_log "$log" "no 'boot 1' of the data partition"
    halt
    state=$($SLOTDISK "$img" state)
    [ "$state" = "adv=- grubenv=- syslinux=slot-b grub=slot-b" ] || fail "after the commit: $state"
    rec=$(record "$img")
    grep -q '^default=b$' <<<"$rec" && grep -q '^trial=$' <<<"$rec" || fail "record after the commit: $rec"
    say "  disk: $state"
    log=$work/$fw-commit-after.log
    boot "$img" "$log"
    wait_for "$log" 'slots: running slot b \(the default\)' 120
    wait_for "$log" 'boot 2 of this data partition' 60
    halt
    say "PASS $fw commit: B committed by its health gate, boots again as the default, data kept"

    say "== $fw fellback: a trial whose kernel panics is recorded as rolled back by PID 1 on A"
    img=$work/$fw-fellback.raw
    cp --sparse=always "$work/out/nomados.raw" "$img"
    $SLOTDISK "$img" kernel-b "$kernel" && $SLOTDISK "$img" arm b || fail "arming slot B failed"
    log=$work/$fw-fellback.log
    boot "$img" "$log"
    start=$SECONDS
    wait_for "$log" 'UPGRADE ROLLED BACK: slot b' 240
    say "  back on A and recorded $((SECONDS - start))s after power-on"
    grep -aqE 'Kernel panic|VFS: Unable to mount root' "$log" || fail_log "$log" "slot B's kernel did not fail"
    wait_for "$log" 'nomad API healthy' 120
    halt
    state=$($SLOTDISK "$img" state)
    [ "$state" = "adv=- grubenv=- syslinux=slot-a grub=slot-a" ] || fail "after the rollback: $state"
    rec=$(record "$img")
    grep -q '^default=a$' <<<"$rec" && grep -q '^trial=$' <<<"$rec" &&
        grep -q '^rolled_back=.*never committed' <<<"$rec" || fail "record after the rollback: $rec"
    say "  record: $(grep rolled_back <<<"$rec")"
    say "PASS $fw fellback"
}

rc=0
for fw in ${FIRMWARES:-bios uefi}; do
    (one_firmware "$fw") || rc=1
done
[ "$rc" = 0 ] && say "all passed" || KEEP=1
exit "$rc"
