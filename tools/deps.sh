#!/usr/bin/env bash
# The Debian packages NomadOS needs, installed when missing. `make run`, `make test` and
# `.ci/run` call this first, so the README's two commands work on a fresh Debian 12 machine.
#
#   tools/deps.sh run     what building the image and booting it needs
#   tools/deps.sh test    that, plus what the test tiers need (DHCP server, udhcpc, ...)
#   tools/deps.sh --list run|test   print the package names and exit
#
# As root the missing packages are installed with apt-get (the list is printed first).
# Otherwise it prints the one command to run and fails, rather than building half an image.
# NOMADOS_SKIP_DEPS=1 skips the check (a machine set up some other way).
set -euo pipefail

say() { printf 'deps: %s\n' "$*" >&2; }

run_packages=(
    # building the kernel from Debian's source package
    build-essential bc flex bison libelf-dev libssl-dev kmod linux-source-6.1
    # the image: file systems, partition tools, boot loaders, PXE, compression
    e2fsprogs dosfstools mtools fdisk gdisk extlinux syslinux syslinux-common syslinux-efi
    isolinux pxelinux cpio xz-utils busybox-static fakeroot xorriso
    # UEFI boots GRUB (its env block is the one-shot slot trial; docs/image.md)
    grub-common grub-efi-amd64-bin
    # the Nomad download (zip, pinned SHA-256)
    curl unzip ca-certificates
    # booting it
    qemu-system-x86 qemu-utils ovmf python3
)
test_packages=(
    "${run_packages[@]}"
    # DHCP: a real server for our client, and udhcpc as the peer it is measured against
    dnsmasq udhcpc iproute2 pkg-config make
    # the TLS boot test makes its CA and node certificate at test time
    openssl
)

list=0
if [ "${1:-}" = --list ]; then
    list=1
    shift
fi
case "${1:-}" in
    run) packages=("${run_packages[@]}") ;;
    test) packages=("${test_packages[@]}") ;;
    *) echo "usage: $0 [--list] run|test" >&2; exit 2 ;;
esac
if [ $list = 1 ]; then
    printf '%s\n' "${packages[@]}"
    exit 0
fi
[ "${NOMADOS_SKIP_DEPS:-0}" = 1 ] && exit 0

if ! command -v dpkg-query >/dev/null; then
    say "not a Debian system: install the equivalents of: ${packages[*]}"
    say "then run with NOMADOS_SKIP_DEPS=1"
    exit 1
fi

missing_packages() {
    local p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}
mapfile -t missing < <(missing_packages)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]}"
    say "install them with:  sudo apt-get install --no-install-recommends ${missing[*]}"
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
installing=("${missing[@]}")
# Two passes: installing one package can remove another (on these machines Debian's
# qemu-system-x86 replaced a backported qemu-utils), and a missing qemu-img would only
# make the QEMU tiers skip. After the second pass anything still missing is an error.
for pass in 1 2; do
    say "installing ${#missing[@]} missing Debian package(s): ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    mapfile -t missing < <(missing_packages)
    [ ${#missing[@]} -eq 0 ] && break
    [ $pass = 2 ] && { say "still missing after installing: ${missing[*]}"; exit 1; }
done
# The dnsmasq package starts a system-wide server holding port 67; the tests run their own
# in network namespaces, and an appliance build machine does not want one either.
if [[ " ${installing[*]} " == *" dnsmasq "* ]] && command -v service >/dev/null 2>&1; then
    service dnsmasq stop >/dev/null 2>&1 || true
fi
say "done"
