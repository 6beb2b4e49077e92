# shellcheck shell=bash disable=SC2034,SC2054  # sets arrays for the run-*.sh scripts
# Shared by the qemu/run-*.sh scripts and the boot tests. Source it; it defines functions and
# variables only, and runs nothing heavy until nomados_qemu_accel is called.
#
# Environment understood by every run-*.sh script:
#   QEMU          QEMU binary (default qemu-system-x86_64)
#   QEMU_ACCEL    kvm | tcg to skip detection (default: probe KVM, fall back to TCG)
#   MEM           guest memory (default 1G)          SMP   vCPUs (default 2)
#   NOMAD_PORT    host port forwarded to guest 4646 on 127.0.0.1 (default 4646)
#   NIC_MODEL     QEMU NIC device (default virtio-net-pci; e1000, e1000e, vmxnet3 also boot)
#   CONSOLE_LOG   write the serial console to this file instead of stdio (tests)
#   QMP_SOCK      expose a QMP unix socket at this path (see qemu/qmp.py)
#   KERNEL_CMDLINE_EXTRA  appended to the kernel command line where the script sets one
#   QEMU_EXTRA_ARGS       appended verbatim (word-split) to the QEMU command line
#   NETDEV_EXTRA  appended to the -netdev user options (e.g. ",hostname=node-1": DHCP option 12)
#   NET_TAP       use this existing tap device instead of user networking (no port forward,
#                 no QEMU DHCP: the tap's network serves the guest; tests/cluster/ runs QEMU
#                 in a network namespace whose bridge holds the taps)
#   NIC_MAC       the NIC's MAC address (default: QEMU's 52:54:00:12:34:56)

QEMU=${QEMU:-qemu-system-x86_64}

# The kernel command line every boot path uses. The last console= owns /dev/console, so the
# serial port (read by clouds and tests) comes last and tty0 (VMware, local screens) first.
NOMADOS_CMDLINE_BASE="console=tty0 console=ttyS0,115200"

nomados_die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Sets ACCEL_ARGS (array), NOMADOS_ACCEL (kvm|tcg) and TIMEOUT_SCALE (multiply timeouts by it).
# KVM is used only if a tiny guest actually runs under it: /dev/kvm can exist and open yet be
# unusable (nested virtualisation, missing permissions), so opening it is not enough.
nomados_qemu_accel() {
    local accel=${QEMU_ACCEL:-}
    if [ -z "$accel" ]; then
        accel=tcg
        if [ -r /dev/kvm ] && [ -w /dev/kvm ] && nomados_kvm_probe; then
            accel=kvm
        fi
    fi
    case "$accel" in
        kvm) ACCEL_ARGS=(-accel kvm -cpu host); TIMEOUT_SCALE=1 ;;
        tcg) ACCEL_ARGS=(-accel tcg -cpu max); TIMEOUT_SCALE=6 ;;
        *) nomados_die "QEMU_ACCEL must be kvm or tcg, got '$accel'" ;;
    esac
    NOMADOS_ACCEL=$accel
    export NOMADOS_ACCEL TIMEOUT_SCALE
    # Children (other run-*.sh) reuse the answer instead of probing again.
    export QEMU_ACCEL=$accel
}

# Boot a 64 KiB "BIOS" whose reset vector initialises the FPU, writes 'K' to COM1 and exits
# through isa-debug-exit. Success means KVM really executed guest code. The FPU instruction
# matters: on some nested hosts KVM runs plain code but stops with "emulation failure" at the
# first fninit, which is what every real firmware (OVMF, SeaBIOS) and kernel execute early.
nomados_kvm_probe() {
    local tmp out
    tmp=$(mktemp) || return 1
    python3 - "$tmp" <<'PY' || { rm -f "$tmp"; return 1; }
import sys
rom = bytearray(b"\xf4" * 65536)                      # hlt everywhere
# reset vector: fwait; fninit; mov dx,0x3f8; mov al,'K'; out dx,al; out 0xf4,al; hlt; jmp $-1
code = bytes([0x9B, 0xDB, 0xE3, 0xBA, 0xF8, 0x03, 0xB0, 0x4B, 0xEE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
rom[0xFFF0:0xFFF0 + len(code)] = code
open(sys.argv[1], "wb").write(rom)
PY
    out=$(timeout 5 "$QEMU" -accel kvm -machine pc -bios "$tmp" -nodefaults -display none \
        -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null 2>/dev/null)
    rm -f "$tmp"
    [ "$out" = K ]
}

# Sets CONSOLE_ARGS: serial on stdio with the monitor multiplexed (Ctrl-A X quits), or into
# CONSOLE_LOG for unattended runs.
nomados_console_args() {
    if [ -n "${CONSOLE_LOG:-}" ]; then
        CONSOLE_ARGS=(-display none -monitor none -serial "file:$CONSOLE_LOG")
    else
        CONSOLE_ARGS=(-display none -serial mon:stdio)
    fi
    if [ -n "${QMP_SOCK:-}" ]; then
        CONSOLE_ARGS+=(-qmp "unix:$QMP_SOCK,server=on,wait=off")
    fi
}

# Sets NET_ARGS: user networking with the Nomad API forwarded to 127.0.0.1:$NOMAD_PORT.
# $1: extra -netdev user options (e.g. ",tftp=DIR,bootfile=pxelinux.0").
# With NET_TAP: the tap device instead (user options in $1 are refused: nothing serves them).
nomados_net_args() {
    local port=${NOMAD_PORT:-4646} nic=${NIC_MODEL:-virtio-net-pci},netdev=n0
    if [ -n "${NIC_MAC:-}" ]; then
        [[ "$NIC_MAC" =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] ||
            nomados_die "NIC_MAC must be a MAC address like 52:54:00:12:34:56, got '$NIC_MAC'"
        nic+=",mac=$NIC_MAC"
    fi
    if [ -n "${NET_TAP:-}" ]; then
        [[ "$NET_TAP" =~ ^[a-zA-Z0-9_.-]{1,15}$ ]] || nomados_die "NET_TAP must be an interface name, got '$NET_TAP'"
        [ -z "${1:-}${NETDEV_EXTRA:-}" ] ||
            nomados_die "NET_TAP=$NET_TAP: user networking options '${1:-}${NETDEV_EXTRA:-}' do not apply to a tap"
        NET_ARGS=(-netdev "tap,id=n0,ifname=$NET_TAP,script=no,downscript=no" -device "$nic")
        return
    fi
    [[ "$port" =~ ^[0-9]+$ ]] || nomados_die "NOMAD_PORT must be a port number, got '$port'"
    NET_ARGS=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:4646${1:-}${NETDEV_EXTRA:-}"
        -device "$nic")
}

# Sets BASE_ARGS: machine, accel, memory, CPUs, RNG, console, network. Call after the above.
nomados_base_args() {
    BASE_ARGS=(-machine q35 "${ACCEL_ARGS[@]}" -m "${MEM:-1G}" -smp "${SMP:-2}"
        -nodefaults -no-user-config
        -device virtio-rng-pci
        "${CONSOLE_ARGS[@]}" "${NET_ARGS[@]}")
}

# A built image is never booted in place by default: a booted machine writes its identity
# (Nomad's node ID, Raft state, later ACL secrets) to the data partition, and the image is
# what gets uploaded to clouds and copied to every machine. Prints the path of
# `<image>.run.qcow2`, a copy-on-write overlay backed by the image, made anew when the image
# is newer (rebuilt) and kept otherwise, so a machine keeps its state between runs.
nomados_overlay() {
    local image=$1 fmt=$2 overlay=$1.run.qcow2
    if [ ! -f "$overlay" ] || [ "$image" -nt "$overlay" ]; then
        rm -f "$overlay"
        qemu-img create -q -f qcow2 -b "$(realpath "$image")" -F "$fmt" "$overlay" >&2 ||
            nomados_die "cannot create the overlay $overlay (qemu-img, from qemu-utils)"
        echo "$(basename "$0"): booting a new copy-on-write overlay $overlay; $image stays as built" >&2
    else
        echo "$(basename "$0"): booting the overlay $overlay (delete it for a fresh machine); $image stays as built" >&2
    fi
    printf '%s\n' "$overlay"
}

# Sets DISK_ARGS for an image file: virtio (default), nvme, ahci, scsi (virtio-scsi) or pvscsi
# via DISK_IF. The format comes from the file name unless DISK_FORMAT says. DISK_MODE says
# what the guest's writes do: overlay (default, see nomados_overlay), snapshot (discarded at
# exit; SNAPSHOT=1 means the same) or in-place (written to the image itself).
nomados_disk_args() {
    local disk=$1 fmt mode=${DISK_MODE:-overlay}
    [ -f "$disk" ] || nomados_die "disk image '$disk' not found"
    case "$disk" in *.qcow2) fmt=qcow2 ;; *) fmt=raw ;; esac
    fmt=${DISK_FORMAT:-$fmt}
    [ "${SNAPSHOT:-0}" = 1 ] && mode=snapshot
    case "$mode" in
        overlay) disk=$(nomados_overlay "$disk" "$fmt") || exit 1; fmt=qcow2 ;;
        snapshot | in-place) ;;
        *) nomados_die "DISK_MODE must be overlay, snapshot or in-place, got '$mode'" ;;
    esac
    local drive="file=$disk,format=$fmt,if=none,id=d0"
    [ "$mode" = snapshot ] && drive+=",snapshot=on"
    case "${DISK_IF:-virtio}" in
        virtio) DISK_ARGS=(-drive "$drive" -device virtio-blk-pci,drive=d0,bootindex=1) ;;
        nvme) DISK_ARGS=(-drive "$drive" -device nvme,drive=d0,serial=nomados0,bootindex=1) ;;
        ahci) DISK_ARGS=(-drive "$drive" -device ide-hd,drive=d0,bus=ide.0,bootindex=1) ;;
        scsi) DISK_ARGS=(-drive "$drive" -device virtio-scsi-pci,id=scsi0
            -device scsi-hd,drive=d0,bus=scsi0.0,bootindex=1) ;;
        # VMware's paravirtual SCSI controller, as QEMU emulates it.
        pvscsi) DISK_ARGS=(-drive "$drive" -device pvscsi,id=scsi0
            -device scsi-hd,drive=d0,bus=scsi0.0,bootindex=1) ;;
        *) nomados_die "DISK_IF must be virtio, nvme, ahci, scsi or pvscsi, got '${DISK_IF}'" ;;
    esac
}

# Sets FIRMWARE_ARGS for UEFI: read-only OVMF code plus a writable variable store. With
# OVMF_VARS=path the store persists there (created from the template if missing); otherwise a
# private copy is made and unlinked at once, so nothing is left behind however QEMU exits.
nomados_uefi_args() {
    local code=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}
    local template=${OVMF_VARS_TEMPLATE:-/usr/share/OVMF/OVMF_VARS.fd}
    [ -r "$code" ] || nomados_die "OVMF firmware '$code' not found (apt-get install ovmf)"
    [ -r "$template" ] || nomados_die "OVMF variable template '$template' not found"
    local vars
    if [ -n "${OVMF_VARS:-}" ]; then
        [ -f "$OVMF_VARS" ] || cp "$template" "$OVMF_VARS"
        vars=$OVMF_VARS
    else
        local tmp
        tmp=$(mktemp "${TMPDIR:-/tmp}/nomados-ovmf-vars.XXXXXX")
        cp "$template" "$tmp"
        exec {NOMADOS_VARS_FD}<>"$tmp"
        rm -f "$tmp"
        vars=/proc/self/fd/$NOMADOS_VARS_FD
    fi
    FIRMWARE_ARGS=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
        -drive "if=pflash,format=raw,unit=1,file=$vars")
}

# exec QEMU, so the caller's PID is QEMU's PID (tests can kill it directly).
nomados_exec_qemu() {
    local extra=()
    # shellcheck disable=SC2206 # word splitting is the documented behaviour
    [ -n "${QEMU_EXTRA_ARGS:-}" ] && extra=(${QEMU_EXTRA_ARGS})
    if [ "${NOMADOS_QEMU_VERBOSE:-0}" = 1 ]; then
        printf '%s: accel=%s: %s\n' "$(basename "$0")" "$NOMADOS_ACCEL" "$QEMU $*" >&2
    fi
    exec "$QEMU" "$@" "${extra[@]}"
}
