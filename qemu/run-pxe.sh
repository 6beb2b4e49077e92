#!/usr/bin/env bash
# Netboot NomadOS PXE artifacts through QEMU's built-in DHCP + TFTP server (no root needed).
#   qemu/run-pxe.sh out/pxe
# The NIC's iPXE option ROM fetches PXE_BOOTFILE from the directory:
#   pxelinux.0 (default)  iPXE -> pxelinux -> pxelinux.cfg/default -> vmlinuz + initramfs
#   boot.ipxe             iPXE runs the script directly
# PXE_FIRMWARE=uefi boots with OVMF instead of SeaBIOS (then use PXE_BOOTFILE=boot.ipxe:
# pxelinux.0 is a BIOS program).
# Environment: see qemu/common.sh.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -eq 1 ] || { echo "usage: $0 <pxe directory>" >&2; exit 2; }
dir=$(cd "$1" 2>/dev/null && pwd) || nomados_die "PXE directory '$1' not found"
bootfile=${PXE_BOOTFILE:-pxelinux.0}
[ -f "$dir/$bootfile" ] || nomados_die "$dir/$bootfile not found (build it with image/pxe.sh)"
case "$dir" in *,*) nomados_die "PXE directory path must not contain a comma: $dir" ;; esac
nomados_qemu_accel
nomados_console_args
nomados_net_args ",tftp=$dir,bootfile=$bootfile"
nomados_base_args
firmware=()
case "${PXE_FIRMWARE:-bios}" in
    bios) ;;
    uefi) nomados_uefi_args; firmware=("${FIRMWARE_ARGS[@]}") ;;
    *) nomados_die "PXE_FIRMWARE must be bios or uefi, got '$PXE_FIRMWARE'" ;;
esac
nomados_exec_qemu "${firmware[@]}" "${BASE_ARGS[@]}" -vga std -boot n
