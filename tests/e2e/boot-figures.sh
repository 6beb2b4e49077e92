#!/usr/bin/env bash
# Boot benchmark: builds the appliance image (nomad-double as Nomad unless NOMAD_BIN), boots
# it once with SeaBIOS, and prints the boot timeline read from the serial console. PID 1's
# lines carry CLOCK_MONOTONIC timestamps (0 = kernel start), so the guest stages are
# measured on the guest clock; time before the kernel is measured on the host clock.
# Figures only: nothing here asserts a speed.
#
#   tests/e2e/boot-figures.sh            (QEMU_ACCEL=kvm|tcg to force; KEEP=1 keeps logs)
# Exit: 0 figures printed, 1 the boot failed, 77 prerequisite missing.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

( e2e_require ) || exit $?
kernel=$(cached_kernel) || exit $?
nomados_qemu_accel
export QEMU_ACCEL=$NOMADOS_ACCEL TIMEOUT_SCALE
work=$(mktemp -d /tmp/nomados-figures.XXXXXX)
cleanup() { stop_vm; if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT

nomad=$(e2e_nomad_bin) || exit 1
echo "figures: building the image" >&2
( e2e_build_disk "$work/out" "$kernel" "$nomad" ) || exit 1

log=$work/console.log
t0=$(date +%s.%N)
start_vm "$log" "$work/qmp" "$REPO/qemu/run-bios.sh" "$work/out/nomados.qcow2"
trap cleanup EXIT
t_kernel=
( # wait for the first kernel line, on the host clock
    while ! grep -q 'Linux version' "$log" 2>/dev/null; do
        kill -0 "$VM_PID" 2>/dev/null || exit 1
        sleep 0.05
    done
) && t_kernel=$(date +%s.%N)
( wait_for "$log" 'packs: Apply: [0-9]+ created' 120 ) || exit 1
t_done=$(date +%s.%N)
"$REPO/qemu/qmp.py" --wait 5 "$work/qmp" system_powerdown >/dev/null 2>&1 || true
for _ in $(seq 150); do kill -0 "$VM_PID" 2>/dev/null || break; sleep 0.2; done

python3 - "$log" "$NOMADOS_ACCEL" "$t0" "${t_kernel:-}" "$t_done" <<'PY'
import re, sys
log, accel, t0, t_kernel, t_done = sys.argv[1:6]
text = open(log, errors="replace").read().replace("\r", "")
def ts(pattern):
    for line in text.splitlines():
        m = re.match(r"\[\s*([0-9]+\.[0-9]+)\]\s*(.*)", line)
        if m and re.search(pattern, m.group(2)):
            return float(m.group(1))
    return None
marks = [
    ("PID 1 started", ts(r"nomad-init .* starting")),
    ("first lease", ts(r"eth0: bound ")),
    ("Nomad API healthy", ts(r"nomad API healthy")),
    ("packs applied", ts(r"packs: Apply: [0-9]+ created")),
]
print(f"boot timeline (BIOS disk, {accel}), guest CLOCK_MONOTONIC (0 = kernel start):")
prev_name, prev = "kernel start", 0.0
for name, t in marks:
    if t is None:
        print(f"  {prev_name + ' -> ' + name:<36} (no '{name}' line)")
        continue
    print(f"  {prev_name + ' -> ' + name:<36} {t - prev:7.2f} s")
    prev_name, prev = name, t
if marks[-1][1] is not None:
    print(f"  {'total, kernel start -> packs applied':<36} {marks[-1][1]:7.2f} s")
print("host clock (includes firmware, boot loader, console polling every 50 ms):")
if t_kernel:
    print(f"  {'QEMU start -> first kernel line':<36} {float(t_kernel) - float(t0):7.2f} s")
print(f"  {'QEMU start -> packs applied':<36} {float(t_done) - float(t0):7.2f} s")
PY
