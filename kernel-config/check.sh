#!/usr/bin/env bash
# Verify that every symbol requested by the config fragments has the requested value in the
# final .config. Kconfig (and merge_config.sh) silently drop symbols whose dependencies are not
# met; this turns that into a hard error that names the fragment, line and symbol.
#
# usage: check.sh [--platforms] <final .config> <fragment>...
# Later fragments override earlier ones, as in merge_config.sh. --platforms (build.sh passes
# it) also requires every target platform's drivers, listed below, to be built in.
set -euo pipefail

platform_check=0
if [ "${1:-}" = --platforms ]; then
    platform_check=1
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 [--platforms] <final .config> <fragment>..." >&2
    exit 2
fi
final=$1
shift
[ -r "$final" ] || { echo "check.sh: cannot read $final" >&2; exit 2; }

# Drivers each target platform cannot boot or reach the network without. Checked against the
# final .config whatever the fragments say, so deleting a line from a fragment fails here
# instead of on a cloud. (Dependencies such as PCI_MSI are covered by the fragment check.)
platforms=(
    "QEMU/KVM: CONFIG_VIRTIO_PCI CONFIG_VIRTIO_NET CONFIG_VIRTIO_BLK CONFIG_SCSI_VIRTIO CONFIG_E1000 CONFIG_SATA_AHCI"
    "GCE: CONFIG_GVE CONFIG_VIRTIO_NET CONFIG_SCSI_VIRTIO CONFIG_BLK_DEV_NVME"
    "EC2 Nitro: CONFIG_ENA_ETHERNET CONFIG_BLK_DEV_NVME"
    "EC2 Xen: CONFIG_XEN CONFIG_XEN_PVHVM_GUEST CONFIG_XEN_BLKDEV_FRONTEND CONFIG_XEN_NETDEV_FRONTEND CONFIG_IXGBEVF"
    "Azure/Hyper-V: CONFIG_HYPERV CONFIG_HYPERV_UTILS CONFIG_HYPERV_BALLOON CONFIG_HYPERV_NET CONFIG_HYPERV_STORAGE CONFIG_HYPERV_KEYBOARD CONFIG_PCI_HYPERV CONFIG_MLX4_EN CONFIG_MLX5_CORE CONFIG_MLX5_CORE_EN CONFIG_MICROSOFT_MANA CONFIG_BLK_DEV_NVME"
    "Machine config sources: CONFIG_ISO9660_FS CONFIG_JOLIET CONFIG_VFAT_FS CONFIG_BLK_DEV_SR CONFIG_FW_CFG_SYSFS CONFIG_DMIID"
    "USB boot/install media: CONFIG_USB_XHCI_HCD CONFIG_USB_XHCI_PCI CONFIG_USB_EHCI_HCD CONFIG_USB_EHCI_PCI CONFIG_USB_UHCI_HCD CONFIG_USB_OHCI_HCD CONFIG_USB_STORAGE CONFIG_USB_UAS CONFIG_BLK_DEV_SD CONFIG_BLK_DEV_SR CONFIG_ISO9660_FS CONFIG_MSDOS_PARTITION CONFIG_EFI_PARTITION CONFIG_USB_HID"
    "VMware: CONFIG_VMXNET3 CONFIG_VMWARE_PVSCSI CONFIG_E1000E CONFIG_FUSION_SPI CONFIG_FUSION_SAS"
)
missing=0
[ "$platform_check" = 1 ] || platforms=()
for entry in "${platforms[@]}"; do
    platform=${entry%%:*}
    for sym in ${entry#*:}; do
        if ! grep -qx "$sym=y" "$final"; then
            got=$(grep -E "^$sym=|^# $sym is not set" "$final" || true)
            echo "check.sh: $platform needs $sym=y built in, final .config has ${got:-nothing}" >&2
            missing=$((missing + 1))
        fi
    done
done

awk '
    # Pass 1: final .config (first file). Record every symbol value; "is not set" -> "n".
    FNR == NR {
        if (match($0, /^CONFIG_[A-Za-z0-9_]+=/)) {
            sym = substr($0, 1, RLENGTH - 1); have[sym] = substr($0, RLENGTH + 1)
        } else if (match($0, /^# CONFIG_[A-Za-z0-9_]+ is not set$/)) {
            sym = $2; have[sym] = "n"
        }
        next
    }
    # Pass 2..: fragments. Last request for a symbol wins; remember where it was made.
    {
        sym = ""
        if (match($0, /^CONFIG_[A-Za-z0-9_]+=/)) {
            sym = substr($0, 1, RLENGTH - 1); val = substr($0, RLENGTH + 1)
        } else if (match($0, /^# CONFIG_[A-Za-z0-9_]+ is not set$/)) {
            sym = $2; val = "n"
        } else if ($0 !~ /^[ \t]*(#.*)?$/) {
            printf "%s:%d:1: cannot parse fragment line: %s\n", FILENAME, FNR, $0
            bad++
            next
        }
        if (sym != "") {
            if (!(sym in want)) order[++n] = sym
            want[sym] = val; where[sym] = FILENAME ":" FNR
        }
    }
    END {
        for (i = 1; i <= n; i++) {
            sym = order[i]
            got = (sym in have) ? have[sym] : "n"   # absent from .config == not set
            if (got != want[sym]) {
                printf "%s:1: %s requested %s, final .config has %s\n", where[sym], sym, want[sym], \
                    (sym in have) ? got : "nothing (dependencies not met or symbol unknown)"
                bad++
            }
        }
        if (bad) {
            printf "check.sh: %d requested symbol(s) did not get their value\n", bad
            exit 1
        }
        printf "check.sh: all %d requested symbols have their requested value\n", n
    }
' "$final" "$@" >&2 || missing=$((missing + 1))
if [ "$missing" -gt 0 ]; then
    exit 1
fi
if [ "$platform_check" = 1 ]; then
    echo "check.sh: every platform's required drivers are built in" >&2
fi
