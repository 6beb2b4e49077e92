#!/usr/bin/env bash
# Boot the NomadOS hybrid ISO (image/iso.sh) in QEMU, as a CD or as a USB-stick-like disk.
#   qemu/run-iso.sh out/nomados.iso
# ISO_FIRMWARE=bios (default, SeaBIOS) or uefi (OVMF).
# ISO_AS=cdrom (default: El Torito from an IDE CD drive), usb (the same file as a USB stick:
# usb-storage on QEMU's xHCI controller, booted through the hybrid MBR/GPT) or disk (a
# read-only virtio disk: the same hybrid path without USB).
# Add a target disk for an install with QEMU_EXTRA_ARGS, e.g.
#   QEMU_EXTRA_ARGS="-drive file=disk.raw,format=raw,if=virtio"
# Environment: see qemu/common.sh.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -eq 1 ] || { echo "usage: $0 <iso>" >&2; exit 2; }
iso=$1
[ -f "$iso" ] || nomados_die "ISO '$iso' not found (build it with FORMATS=iso ./buildimg.sh)"
case "$iso" in *,*) nomados_die "ISO path must not contain a comma: $iso" ;; esac
nomados_qemu_accel
nomados_console_args
nomados_net_args
nomados_base_args
firmware=()
case "${ISO_FIRMWARE:-bios}" in
    bios) ;;
    uefi) nomados_uefi_args; firmware=("${FIRMWARE_ARGS[@]}") ;;
    *) nomados_die "ISO_FIRMWARE must be bios or uefi, got '$ISO_FIRMWARE'" ;;
esac
case "${ISO_AS:-cdrom}" in
    cdrom) media=(-drive "file=$iso,format=raw,if=none,id=cd0,media=cdrom,readonly=on"
        -device ide-cd,drive=cd0,bus=ide.0,bootindex=0) ;;
    usb) media=(-drive "file=$iso,format=raw,if=none,id=iso0,readonly=on"
        -device qemu-xhci,id=xhci -device usb-storage,bus=xhci.0,drive=iso0,removable=on,bootindex=0) ;;
    disk) media=(-drive "file=$iso,format=raw,if=none,id=iso0,readonly=on"
        -device virtio-blk-pci,drive=iso0,bootindex=0) ;;
    *) nomados_die "ISO_AS must be cdrom, usb or disk, got '$ISO_AS'" ;;
esac
nomados_exec_qemu "${firmware[@]}" "${BASE_ARGS[@]}" "${media[@]}"
