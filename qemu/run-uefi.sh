#!/usr/bin/env bash
# Boot a NomadOS disk image with OVMF (UEFI, EFI stub kernel from the ESP).
#   qemu/run-uefi.sh out/nomados.qcow2
# Environment: see qemu/common.sh, plus OVMF_CODE, OVMF_VARS_TEMPLATE and OVMF_VARS (a path
# where the variable store persists between boots; default: a throwaway copy).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -eq 1 ] || { echo "usage: $0 <disk image (.qcow2 or raw)>" >&2; exit 2; }
nomados_qemu_accel
nomados_console_args
nomados_net_args ""
nomados_base_args
nomados_disk_args "$1"
nomados_uefi_args
nomados_exec_qemu "${FIRMWARE_ARGS[@]}" "${BASE_ARGS[@]}" -vga std "${DISK_ARGS[@]}"
