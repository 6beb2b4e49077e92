#!/usr/bin/env bash
# Install to bare metal, in QEMU: the real image (static nomad-init, the Nomad test double or
# NOMAD_BIN, the default packs) is built as raw + PXE artifacts whose kernel command line
# says nomados.install=/dev/vda with the xz image served over HTTP by the host (QEMU's user
# network reaches the host's 127.0.0.1 as 10.0.2.2). Run 1: netboot with an empty 2 GiB
# virtio disk; PID 1 installs and reboots (QEMU -no-reboot exits). Run 2: boot that disk
# (FIRMWARE=bios|uefi) with a user data that still holds [install] and reach Nomad healthy with
# the pack set applied, the [install] said to be ignored (it runs from its disk). Run 3: netboot the
# installer again against the now used disk: it must refuse (no wipe) and name what is
# there, leaving the disk's first MiB as it was. Prints the install time.
#
# SOURCE=iso installs from the hybrid ISO instead (image/iso.sh, attached as a disk like a USB
# stick, the target is then /dev/vdb, the image its IMAGE.XZ); no HTTP server is involved.
#
# Environment: KERNEL (default: the cached build), NOMAD_BIN, FIRMWARE (bios default, uefi),
# SOURCE (http default, iso), QEMU_ACCEL, KEEP=1 keeps the work directory. Run under flock /tmp/nomados-heavy.lock.
# Exit: 0 pass, 1 fail, 77 skipped.
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../e2e/lib.sh
. "$REPO/tests/e2e/lib.sh"
say() { printf 'install-test: %s\n' "$*"; }

e2e_require
[ -f /usr/lib/PXELINUX/pxelinux.0 ] || skip "pxelinux not installed"
firmware=${FIRMWARE:-bios}
kernel=$(cached_kernel) || exit $?
nomad=$(e2e_nomad_bin) || exit 1
nomados_qemu_accel
work=$(mktemp -d /tmp/nomados-install.XXXXXX)
cleanup() {
    stop_vm
    [ -z "${HTTP_PID:-}" ] || kill "$HTTP_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "building the image (raw) with $nomad"
e2e_build_disk "$work/out" "$kernel" "$nomad"
# e2e_build_disk makes qcow2; the installer serves the raw one next to it.
[ -f "$work/out/nomados.raw" ] || qemu-img convert -O raw "$work/out/nomados.qcow2" "$work/out/nomados.raw"
mkdir -p "$work/serve"
xz -T0 -6 --check=crc32 -c "$work/out/nomados.raw" >"$work/serve/nomados.raw.xz"
sha=$(sha256sum "$work/serve/nomados.raw.xz" | cut -d' ' -f1)
http_port=$(free_port)
serve_dir "$work/serve" "$http_port" "$work/http.log"
say "serving nomados.raw.xz ($(du -h "$work/serve/nomados.raw.xz" | cut -f1), sha256 $sha) on 127.0.0.1:$http_port"

install_cmdline="nomados.install=/dev/vda nomados.install.image=http://10.0.2.2:$http_port/nomados.raw.xz nomados.install.sha256=$sha"
KERNEL_CMDLINE_EXTRA=$install_cmdline e2e_build_pxe "$work/pxe" "$kernel" "$nomad"
target=$work/target.raw
qemu-img create -q -f raw "$target" 2G
disk_args="-no-reboot -drive file=$target,format=raw,if=none,id=t0 -device virtio-blk-pci,drive=t0"
installer=("$REPO/qemu/run-pxe.sh" "$work/pxe")
dev=/dev/vda
# The NIC boots first: OVMF would otherwise boot the installed disk on the refusal run.
pxe_env=(NIC_MODEL=virtio-net-pci,bootindex=0)
[ "$firmware" = uefi ] && pxe_env+=(PXE_FIRMWARE=uefi PXE_BOOTFILE=boot.ipxe)
if [ "${SOURCE:-http}" = iso ]; then
    dev=/dev/vdb
    KERNEL_CMDLINE_EXTRA="nomados.install=$dev" BOOT_TIMEOUT=1 \
        "$REPO/image/iso.sh" "$work/pxe" "$work/out/nomados.raw" "$work/nomados.iso" >>"$work/iso.log" 2>&1 ||
        { tail -5 "$work/iso.log" >&2; fail "image/iso.sh failed"; }
    installer=("$REPO/qemu/run-iso.sh" "$work/nomados.iso")
    pxe_env=(ISO_AS=disk ISO_FIRMWARE=$firmware)
    say "installing from the ISO ($(du -h "$work/nomados.iso" | cut -f1)) to $dev"
fi

# Run 1: install.
log1=$work/install.log
start=$SECONDS
start_vm "$log1" "$work/qmp1" env "${pxe_env[@]}" QEMU_EXTRA_ARGS="$disk_args" "${installer[@]}"
trap cleanup EXIT # start_vm replaced it
wait_for "$log1" "install: target $dev" 120
wait_for "$log1" "NomadOS installed to $dev in [0-9.]+ s; rebooting" 300
wait_exit 60 || fail_log "$log1" "QEMU did not end at the reboot after the install"
wall=$((SECONDS - start))
grep -q 'is 2048 MiB; blank' "$log1" || fail_log "$log1" "the installer did not find the empty disk blank"
grep -q 'SHA-256 of the compressed image verified' "$log1" || fail_log "$log1" "no SHA-256 verification line"
grep -qE "install: data partition $dev[0-9]+ grown to" "$log1" || fail_log "$log1" "the data partition was not grown"
took=$(grep -oE "NomadOS installed to $dev in [0-9.]+ s" "$log1" | grep -oE '[0-9.]+ s' | head -1)
say "installed in $took (installer child; boot to reboot: ${wall} s wall, accel $NOMADOS_ACCEL)"
head_before=$(head -c 1048576 "$target" | sha256sum | cut -d' ' -f1)

# Run 2: the installed disk boots and runs the appliance, with a user data that still says
# [install] (a fleet's shared one): running from its disk, it must say once that [install]
# is ignored and not install again (it did, at every boot).
log2=$work/installed.log
case "$firmware" in
    bios) runner=$REPO/qemu/run-bios.sh ;;
    uefi) runner=$REPO/qemu/run-uefi.sh ;;
    *) fail "FIRMWARE must be bios or uefi" ;;
esac
printf '[install]\ntarget = "/dev/vda"\nimage = "http://10.0.2.2:%s/nomados.raw.xz"\nsha256 = "%s"\n' \
    "$http_port" "$sha" >"$work/user-data.toml"
start_vm "$log2" "$work/qmp2" env DISK_MODE=in-place DISK_FORMAT=raw \
    QEMU_EXTRA_ARGS="-fw_cfg name=opt/nomados/user-data,file=$work/user-data.toml" "$runner" "$target"
trap cleanup EXIT
assert_appliance_up "$log2"
grep -qE 'boot 1 of this data partition' "$log2" || fail_log "$log2" "not the first boot of the installed data partition"
ignored=$(grep -cE "\[install\] \(/dev/vda\) is ignored: this machine runs from its disk \(slot a\)" "$log2")
[ "$ignored" = 1 ] || fail_log "$log2" "the user data's [install] was not said to be ignored once (said $ignored times)"
grep -q 'install: requested by' "$log2" && fail_log "$log2" "the installed system acted on the user data's [install]"
stop_vm
say "the installed disk booted ($firmware) to Nomad healthy with the pack set applied; the user data's [install] ignored"

# Run 3: the installer refuses the used disk without wipe.
log3=$work/refuse.log
start_vm "$log3" "$work/qmp3" env "${pxe_env[@]}" QEMU_EXTRA_ARGS="$disk_args" "${installer[@]}"
trap cleanup EXIT
wait_for "$log3" 'install: REFUSED' 120
# PID 1's closing line comes after the installer's over a 115200-baud console: wait for it
# whole rather than grep it while it is still being written.
wait_for "$log3" 'nothing was written' 60
for want in 'a GPT partition table' 'labelled NOMADOS-DATA' 'nomados.install.wipe=1' 'nothing was written'; do
    grep -q -- "$want" "$log3" || fail_log "$log3" "the refusal does not say '$want'"
done
stop_vm
head_after=$(head -c 1048576 "$target" | sha256sum | cut -d' ' -f1)
[ "$head_before" = "$head_after" ] || fail "the refused disk's partition table changed"
say "a used disk is refused without wipe: $(grep -o 'REFUSED: .*' "$log3" | head -1 | cut -c1-160)..."
say "PASS ($firmware, source ${SOURCE:-http})"
