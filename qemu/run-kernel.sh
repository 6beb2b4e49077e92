#!/usr/bin/env bash
# Boot a kernel + initramfs directly (no firmware boot loader): the fastest loop while
# working on nomad-init or the kernel config.
#   qemu/run-kernel.sh <bzImage> <initramfs> [extra kernel args...]
# Environment: see qemu/common.sh. KERNEL_CMDLINE_EXTRA is appended too; DISK=path attaches
# a disk image (DISK_IF, DISK_FORMAT, SNAPSHOT apply).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 2 ] || { echo "usage: $0 <bzImage> <initramfs> [kernel args...]" >&2; exit 2; }
kernel=$1 initrd=$2
shift 2
[ -f "$kernel" ] || nomados_die "kernel '$kernel' not found"
[ -f "$initrd" ] || nomados_die "initramfs '$initrd' not found"
nomados_qemu_accel
nomados_console_args
nomados_net_args ""
nomados_base_args
DISK_ARGS=()
[ -n "${DISK:-}" ] && nomados_disk_args "$DISK"
cmdline="$NOMADOS_CMDLINE_BASE $* ${KERNEL_CMDLINE_EXTRA:-}"
nomados_exec_qemu "${BASE_ARGS[@]}" -kernel "$kernel" -initrd "$initrd" -append "${cmdline% }" \
    "${DISK_ARGS[@]}"
