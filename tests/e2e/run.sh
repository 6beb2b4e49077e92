#!/usr/bin/env bash
# End-to-end tests of the real appliance under QEMU, one per boot path, plus persistence:
#
#   bios     SeaBIOS -> syslinux on the disk -> nomad-init
#   uefi     OVMF -> GRUB on the ESP -> nomad-init
#   pxe      iPXE ROM -> QEMU TFTP -> pxelinux -> the root filesystem as an initramfs
#   pxe-uefi OVMF's iPXE -> boot.ipxe -> the same initramfs
#   reboot   the data partition is grown to fill a larger disk, and keeps its contents
#            across a power off (PID 1's boot counter goes 1 -> 2)
#
# Each boot asserts: our DHCP client's lease from QEMU's server (10.0.2.15), the lease's
# hostname, Nomad API healthy, ACLs on (bootstrapped at first boot: the token shown on the
# console, anonymous requests refused), the default pack set applied (`hello` with meta
# nomados.owner, read with that token over the forwarded port), and a clean power off within
# 30 s of QMP system_powerdown, the node's drain asked with the token.
#
#   tests/e2e/run.sh [bios|uefi|pxe|pxe-uefi|reboot ...]      (default: all)
#
# Environment: NOMAD_BIN (default: the nomad-double test double), KERNEL (default: the
# cached build), QEMU_ACCEL (kvm|tcg; default probe), KEEP=1 keeps the work directory.
# Exit: 0 all passed, 1 a test failed, 77 a prerequisite is missing (nothing ran).
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(bios uefi pxe pxe-uefi reboot)
for t in "${tests[@]}"; do
    case "$t" in bios | uefi | pxe | pxe-uefi | reboot) ;; *) echo "unknown test '$t' (bios uefi pxe pxe-uefi reboot)" >&2; exit 2 ;; esac
done

# Prerequisites (exit 77 from these subshells = skip everything).
( e2e_require ) || exit $?
kernel=$(cached_kernel) || exit $?
for t in "${tests[@]}"; do
    case "$t" in
        uefi | pxe-uefi) [ -f "${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}" ] || { echo "SKIP: OVMF not installed" >&2; exit 77; } ;;
        pxe) [ -f /usr/lib/PXELINUX/pxelinux.0 ] || { echo "SKIP: pxelinux not installed" >&2; exit 77; } ;;
    esac
done

nomados_qemu_accel
export QEMU_ACCEL=$NOMADOS_ACCEL TIMEOUT_SCALE
work=$(mktemp -d /tmp/nomados-e2e.XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT

echo "e2e: kernel $kernel, accel $NOMADOS_ACCEL (timeouts x$TIMEOUT_SCALE)" >&2
nomad=$(e2e_nomad_bin) || exit 1
echo "e2e: nomad $nomad" >&2
echo "e2e: building the disk image" >&2
( e2e_build_disk "$work/out" "$kernel" "$nomad" ) || exit 1
disk=$work/out/nomados.qcow2
if [[ " ${tests[*]} " == *" pxe"* ]]; then
    echo "e2e: building the PXE artifacts" >&2
    # Without busybox: the shipped pack set and PID 1 need no shell (docs/security.md).
    ( PXE_TOOLBOX=0 e2e_build_pxe "$work/pxe" "$kernel" "$nomad" ) || exit 1
fi

test_bios() {
    cp "$disk" "$work/bios.qcow2"
    local before after
    before=$(sha256sum <"$work/bios.qcow2")
    # What `make run` does: the image is booted through a copy-on-write overlay.
    DISK_MODE=overlay start_vm "$work/bios.log" "$work/bios.qmp" "$REPO/qemu/run-bios.sh" "$work/bios.qcow2"
    assert_appliance_up "$work/bios.log"
    assert_powerdown "$work/bios.log" "$work/bios.qmp"
    after=$(sha256sum <"$work/bios.qcow2")
    [ "$before" = "$after" ] || fail "booting changed the image itself (the overlay default did not hold)"
    [ -f "$work/bios.qcow2.run.qcow2" ] || fail "no overlay $work/bios.qcow2.run.qcow2 was made"
    note "the image is unchanged; the machine's writes are in bios.qcow2.run.qcow2"
}

test_uefi() {
    cp "$disk" "$work/uefi.qcow2"
    start_vm "$work/uefi.log" "$work/uefi.qmp" "$REPO/qemu/run-uefi.sh" "$work/uefi.qcow2"
    assert_appliance_up "$work/uefi.log"
    assert_powerdown "$work/uefi.log" "$work/uefi.qmp"
}

test_pxe() {
    start_vm "$work/pxe.log" "$work/pxe.qmp" "$REPO/qemu/run-pxe.sh" "$work/pxe"
    assert_appliance_up "$work/pxe.log"
    grep -q 'no filesystem labelled NOMADOS-DATA found' "$work/pxe.log" ||
        fail "PXE boot should run without a data partition (tmpfs)"
    assert_powerdown "$work/pxe.log" "$work/pxe.qmp"
}

test_pxe_uefi() {
    export PXE_FIRMWARE=uefi PXE_BOOTFILE=boot.ipxe
    start_vm "$work/pxe-uefi.log" "$work/pxe-uefi.qmp" "$REPO/qemu/run-pxe.sh" "$work/pxe"
    assert_appliance_up "$work/pxe-uefi.log"
    assert_powerdown "$work/pxe-uefi.log" "$work/pxe-uefi.qmp"
}

test_reboot() {
    local img=$work/reboot.qcow2
    cp "$disk" "$img"
    # A cloud disk is larger than the image: PID 1 grows the data partition on first boot.
    qemu-img resize -q "$img" +1G || fail "qemu-img resize failed"
    start_vm "$work/reboot1.log" "$work/reboot1.qmp" "$REPO/qemu/run-bios.sh" "$img"
    assert_appliance_up "$work/reboot1.log"
    grep -q 'boot 1 of this data partition' "$work/reboot1.log" ||
        fail_log "$work/reboot1.log" "first boot did not count boot 1 on the data partition"
    grep -qE 'grew the data partition .* to [0-9]+ MiB|grew the data filesystem' "$work/reboot1.log" ||
        fail_log "$work/reboot1.log" "the data partition was not grown to fill the disk"
    note "$(tr -d '\r' <"$work/reboot1.log" | grep -oE 'grew the data (partition|filesystem).*' | paste -sd';')"
    assert_powerdown "$work/reboot1.log" "$work/reboot1.qmp"
    start_vm "$work/reboot2.log" "$work/reboot2.qmp" "$REPO/qemu/run-bios.sh" "$img"
    wait_for "$work/reboot2.log" 'boot [0-9]+ of this data partition' 60
    grep -q 'boot 2 of this data partition' "$work/reboot2.log" ||
        fail_log "$work/reboot2.log" "second boot did not see the counter of the first (want boot 2)"
    grep -qE 'grew the data' "$work/reboot2.log" &&
        fail_log "$work/reboot2.log" "second boot grew the data partition again"
    # The ACL token of the first boot is kept; the second boot neither bootstraps nor shows it.
    assert_appliance_up "$work/reboot2.log" "$work/reboot1.log"
    local token
    token=$(console_token "$work/reboot1.log")
    grep -q 'NOMAD ACL BOOTSTRAP TOKEN' "$work/reboot2.log" &&
        fail_log "$work/reboot2.log" "the second boot bootstrapped ACLs again"
    grep -qF "$token" "$work/reboot2.log" && fail "the second boot showed the ACL token"
    [ "$(grep -cF "$token" "$work/reboot1.log")" = 1 ] ||
        fail_log "$work/reboot1.log" "the first boot showed the ACL token more than once (or logged it)"
    assert_powerdown "$work/reboot2.log" "$work/reboot2.qmp"
}

passed=0 failed=0 failures=()
for t in "${tests[@]}"; do
    start=$SECONDS
    ( "test_${t//-/_}" ) 2>"$work/$t.err"
    rc=$?
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $t ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$t: $(grep -m1 '^FAIL: ' "$work/$t.err" | cut -c7- || true)")
        echo "FAIL $t ($((SECONDS - start)) s): ${failures[-1]#*: }"
    fi
    sed 's/^/    /' "$work/$t.err"
done
echo "$passed passed, $failed failed"
for f in "${failures[@]}"; do echo "  failed: $f"; done
[ $failed -eq 0 ]
