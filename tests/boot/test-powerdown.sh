#!/usr/bin/env bash
# QMP system_powerdown reaches the guest as an ACPI power button press on an evdev device
# (CONFIG_ACPI_BUTTON + CONFIG_INPUT_EVDEV), which is how nomad-init learns to shut down.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
begin_boot_test
# Find the input device named "Power Button" and block until it reports an event.
# shellcheck disable=SC2016 # expanded by the guest shell
body='for d in /sys/class/input/event*; do
    if grep -q "Power Button" "$d/device/name" 2>/dev/null; then dev=/dev/input/${d##*/}; fi
done
[ -n "$dev" ] || { echo NOMADOS-NO-POWER-BUTTON; poweroff -f; }
echo "NOMADOS-WAITING-POWER $dev"
dd if="$dev" of=/dev/null bs=24 count=1 2>/dev/null
echo NOMADOS-POWER-BUTTON
poweroff -f'
busybox_initramfs "$body"
QMP_SOCK=$TEST_TMP/qmp.sock start_vm "$TEST_TMP/console.log" \
    "$REPO/qemu/run-kernel.sh" "$kernel" "$TEST_TMP/initramfs.cpio.xz"
wait_for "$TEST_TMP/console.log" 'NOMADOS-WAITING-POWER|NOMADOS-NO-POWER-BUTTON' 40
grep -q NOMADOS-NO-POWER-BUTTON "$TEST_TMP/console.log" \
    && fail_log "$TEST_TMP/console.log" "no 'Power Button' input device in the guest"
python3 "$REPO/qemu/qmp.py" --wait 5 "$TEST_TMP/qmp.sock" system_powerdown >/dev/null \
    || fail "QMP system_powerdown failed"
start=$SECONDS
wait_exit 30 || fail_log "$TEST_TMP/console.log" "QEMU still running 30s after system_powerdown"
grep -q NOMADOS-POWER-BUTTON "$TEST_TMP/console.log" \
    || fail_log "$TEST_TMP/console.log" "QEMU exited but the guest never saw the power button"
note "guest powered off $((SECONDS - start))s after system_powerdown"
