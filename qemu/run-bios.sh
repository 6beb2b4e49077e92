#!/usr/bin/env bash
# Boot a NomadOS disk image with SeaBIOS (legacy BIOS: syslinux from the ESP, gptmbr.bin in the MBR).
#   qemu/run-bios.sh out/nomados.qcow2
# Environment: see qemu/common.sh (MEM, SMP, NOMAD_PORT, CONSOLE_LOG, QMP_SOCK, DISK_IF,
# SNAPSHOT, NIC_MODEL, QEMU_ACCEL, QEMU_EXTRA_ARGS).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -eq 1 ] || { echo "usage: $0 <disk image (.qcow2 or raw)>" >&2; exit 2; }
nomados_qemu_accel
nomados_console_args
nomados_net_args ""
nomados_base_args
nomados_disk_args "$1"
nomados_exec_qemu "${BASE_ARGS[@]}" -vga std "${DISK_ARGS[@]}"
