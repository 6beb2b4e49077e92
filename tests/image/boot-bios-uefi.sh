#!/usr/bin/env bash
# Boot test: build ONE image with a test PID 1 and boot it under QEMU twice, with SeaBIOS
# (BIOS: gptmbr.bin -> syslinux on the ESP) and with OVMF (UEFI: BOOTX64.EFI = syslinux.efi).
# Each boot must print the token from tests/image/test-init.sh naming the right firmware.
#
# Environment:
#   KERNEL        bzImage to use (default: kernel-config's cached build; skip if none yet)
#   BOOT_TIMEOUT  seconds per boot (default 240; TCG is slow)
#   DISK_IF       virtio (default) or ide
#   KEEP          1 = keep the work directory (images, serial logs)
#   ACCEL         tcg (default) or kvm
# Exit: 0 = both booted, 1 = a boot failed, 77 = skipped (prerequisite missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TIMEOUT=${BOOT_TIMEOUT:-240}
DISK_IF=${DISK_IF:-virtio}
TOKEN=NOMADOS-TEST-BOOT-OK

skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
say() { printf 'boot-test: %s\n' "$*"; }

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
[ -f "$OVMF_CODE" ] && [ -f "$OVMF_VARS" ] || skip "OVMF not installed (apt-get install ovmf)"

# --- kernel: explicit, or the kernel helper's cache entry for the current config -----------
if [ -n "${KERNEL:-}" ]; then
    kernel=$KERNEL
else
    cache=${NOMADOS_CACHE:-$HOME/.cache/nomados}/kernel
    kernel=
    if [ -x "$ROOT/kernel-config/build.sh" ] && key=$("$ROOT/kernel-config/build.sh" --key 2>/dev/null); then
        [ -f "$cache/$key/bzImage" ] && kernel=$cache/$key/bzImage
    fi
    if [ -z "$kernel" ]; then
        # Any cached build will do for a boot test; newest first.
        kernel=$(ls -t "$cache"/*/bzImage 2>/dev/null | head -1 || true)
    fi
    [ -n "$kernel" ] || skip "no cached kernel in $cache/*/bzImage yet (run kernel-config/build.sh, or set KERNEL=)"
fi
[ -f "$kernel" ] || skip "KERNEL=$kernel does not exist"
say "kernel $kernel"

work=$(mktemp -d /tmp/nomados-boot.XXXXXX)
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "building the image (TEST_INIT, no Nomad, qcow2)"
OUT=$work/out KERNEL=$kernel TEST_INIT=$ROOT/tests/image/test-init.sh NOMAD_BIN=none \
    TOOLBOX=1 FORMATS=qcow2 "$ROOT/buildimg.sh" >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    say "FAIL: image build failed"
    exit 1
}
image=$work/out/nomados.qcow2

# TCG by default: on this project's build hosts KVM opens but stalls in real-mode syslinux.
# ACCEL=kvm tries KVM first (QEMU falls back to the next -accel if /dev/kvm cannot be used).
accel=(-accel tcg)
if [ "${ACCEL:-tcg}" = kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    accel=(-accel kvm -accel tcg)
fi

# boot <firmware> : 0 when the token with firmware=<firmware> shows up on the serial port.
boot() {
    local fw=$1 log=$work/serial-$1.log
    local fwargs=()
    if [ "$fw" = uefi ]; then
        cp "$OVMF_VARS" "$work/vars.fd"
        fwargs=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd")
    fi
    : >"$log"
    # -snapshot: the test never modifies the image, so both boots see the same bytes.
    qemu-system-x86_64 "${accel[@]}" -machine q35 -m 512 -smp 1 -nographic -no-reboot \
        -monitor none -serial "file:$log" -snapshot "${fwargs[@]}" \
        -drive "file=$image,format=qcow2,if=$DISK_IF" -nic none >"$work/qemu-$fw.out" 2>&1 &
    qemu_pid=$!
    local start=$SECONDS result=timeout
    while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
        if grep -q "$TOKEN" "$log"; then result=token; break; fi
        if ! kill -0 "$qemu_pid" 2>/dev/null; then
            grep -q "$TOKEN" "$log" && result=token || result=exited
            break
        fi
        sleep 1
    done
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=
    local line
    line=$(grep -a "$TOKEN" "$log" | head -1 | tr -d '\r' || true)
    if [ "$result" = token ] && grep -q "firmware=$fw " <<<"$line"; then
        say "PASS $fw in $((SECONDS - start))s: $line"
        return 0
    fi
    say "FAIL $fw ($result after $((SECONDS - start))s); last serial output:"
    tail -n 25 "$log" | tr -d '\r' | sed 's/^/    /'
    [ -s "$work/qemu-$fw.out" ] && sed 's/^/    qemu: /' "$work/qemu-$fw.out"
    return 1
}

rc=0
boot bios || rc=1
boot uefi || rc=1
[ "$rc" = 0 ] && say "both firmware paths booted the same image" || KEEP=1
exit "$rc"
