# shellcheck shell=bash disable=SC2016,SC2034  # guest scripts are single-quoted on purpose
# Helpers for the QEMU boot tests. Source from a test script; see run.sh for the contract:
# exit 0 = pass, 77 = skip (reason on stderr), anything else = fail.

BOOT_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BOOT_TEST_DIR/../.." && pwd)
# shellcheck source=../../qemu/common.sh
. "$REPO/qemu/common.sh"
# shellcheck source=../lib/vm.sh
. "$REPO/tests/lib/vm.sh"

require_tools() {
    local t
    for t in "$QEMU" python3 xz; do
        command -v "$t" >/dev/null || skip "$t not installed"
    done
}

# A busybox that runs without a libc in the rootfs.
busybox_static() {
    local bb=${BUSYBOX:-/bin/busybox}
    [ -x "$bb" ] || skip "busybox not found at $bb (apt-get install busybox-static)"
    if command -v file >/dev/null && ! file -L "$bb" | grep -q 'statically linked'; then
        skip "$bb is not statically linked (apt-get install busybox-static)"
    fi
    echo "$bb"
}

# The kernel under test: $NOMADOS_KERNEL, or the cached build (built now if missing).
test_kernel() {
    if [ -n "${NOMADOS_KERNEL:-}" ]; then
        [ -f "$NOMADOS_KERNEL" ] || fail "NOMADOS_KERNEL=$NOMADOS_KERNEL not found"
        echo "$NOMADOS_KERNEL"
    else
        "$REPO/kernel-config/build.sh" || fail "kernel build failed"
    fi
}

# begin_boot_test: after a test's own skips, what every boot test sets up: `kernel` (the
# kernel under test), the accelerator, and TEST_TMP, removed with the VM when the test exits.
begin_boot_test() {
    kernel=$(test_kernel)
    nomados_qemu_accel
    TEST_TMP=$(mktemp -d)
    trap 'stop_vm' EXIT
}

# make_busybox_rootfs DIR INIT_BODY: a rootfs with busybox applets and /init running INIT_BODY
# after the usual mounts. /udhcpc.sh prints the lease as "NOMADOS-LEASE ip=... router=...".
make_busybox_rootfs() {
    local dir=$1 body=$2 bb
    bb=$(busybox_static)
    mkdir -p "$dir"/{bin,sbin,proc,sys,dev,tmp,etc,mnt}
    cp "$bb" "$dir/bin/busybox"
    cat >"$dir/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
$body
# Fallback: never leave the test hanging if the body returns.
echo NOMADOS-INIT-END
poweroff -f
INIT
    cat >"$dir/udhcpc.sh" <<'SCRIPT'
#!/bin/busybox sh
case "$1" in
    bound|renew)
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        echo "NOMADOS-LEASE ip=$ip router=$router dns=$dns interface=$interface"
        ;;
esac
SCRIPT
    chmod 0755 "$dir/init" "$dir/udhcpc.sh"
}

# busybox_initramfs INIT_BODY: $TEST_TMP/initramfs.cpio.xz from a make_busybox_rootfs in
# $TEST_TMP/rootfs, packed by image/mkinitramfs.py as the image builder packs it.
busybox_initramfs() {
    make_busybox_rootfs "$TEST_TMP/rootfs" "$1"
    python3 "$REPO/image/mkinitramfs.py" "$TEST_TMP/rootfs" "$TEST_TMP/initramfs.cpio.xz"
}

# The /init body of the network boot tests: token, command line, DHCP lease, power off.
BOOT_OK_BODY='echo NOMADOS-BOOT-OK
echo "NOMADOS-CMDLINE $(cat /proc/cmdline)"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 2 -s /udhcpc.sh || echo NOMADOS-DHCP-FAILED
poweroff -f'

# start_vm LOG CMD...: run a qemu/run-*.sh script in the background with its console in LOG.
# The VM is killed when the test exits, pass or fail.
start_vm() {
    local log=$1
    shift
    : >"$log"
    CONSOLE_LOG=$log NOMAD_PORT=${NOMAD_PORT:-$(free_port)} "$@" &
    VM_PID=$!
    trap 'stop_vm' EXIT
}

# pid1_binaries: NOMAD_INIT_BIN and NOMAD_DOUBLE_BIN for the tests that boot nomad-init as
# the real PID 1 of an initramfs; debug builds made here unless both are given.
pid1_binaries() {
    [ -n "${NOMAD_INIT_BIN:-}" ] && [ -n "${NOMAD_DOUBLE_BIN:-}" ] && return 0
    (cd "$REPO" && cargo build -q -p nomad-init -p nomad-double) || fail "cargo build failed"
    local target
    target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    NOMAD_INIT_BIN=${NOMAD_INIT_BIN:-$target/debug/nomad-init}
    NOMAD_DOUBLE_BIN=${NOMAD_DOUBLE_BIN:-$target/debug/nomad-double}
}

# install_bin BINARY ROOT AT: the binary and the shared libraries it links, at the same paths
# (the debug builds are not static).
install_bin() {
    local bin=$1 root=$2 at=$3 lib
    mkdir -p "$root$(dirname "$at")"
    cp "$bin" "$root$at"
    strip --strip-debug "$root$at" 2>/dev/null || true
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

# pid1_root ROOT: nomad-init as /init, the double as /usr/bin/nomad, the baked agent config;
# call pid1_binaries first. The caller adds what its boot needs, then pack_initramfs.
pid1_root() {
    local root=$1
    install_bin "$NOMAD_INIT_BIN" "$root" /init
    install_bin "$NOMAD_DOUBLE_BIN" "$root" /usr/bin/nomad
    mkdir -p "$root/etc/nomad.d" "$root/etc/nomados"
    cp "$REPO/config/init.json" "$root/etc/nomad.d/init.json"
}

# pack_initramfs ROOT CPIO: ROOT as a newc cpio archive, what run-kernel.sh boots.
pack_initramfs() {
    (cd "$1" && find . | cpio -o -H newc 2>/dev/null) >"$2"
}

# Assertions on the console of a BOOT_OK_BODY guest on QEMU user networking.
assert_boot_ok() {
    local log=$1
    wait_for "$log" 'NOMADOS-BOOT-OK' 40
    # The whole lease line (it ends with interface=), not a half-written one.
    wait_for "$log" 'NOMADOS-LEASE .* interface=|NOMADOS-DHCP-FAILED' 30
    grep -q 'NOMADOS-DHCP-FAILED' "$log" && fail_log "$log" "udhcpc got no lease"
    grep -qE 'NOMADOS-LEASE ip=10\.0\.2\.15 router=10\.0\.2\.2 ' "$log" \
        || fail_log "$log" "lease is not QEMU's user-net 10.0.2.15 via 10.0.2.2"
    grep -qE 'NOMADOS-CMDLINE .*console=tty0 console=ttyS0,115200' "$log" \
        || fail_log "$log" "kernel command line lacks 'console=tty0 console=ttyS0,115200'"
    note "$(grep -m1 -o 'NOMADOS-LEASE.*' "$log" | tr -d '\r')"
    wait_exit 30 || fail "guest did not power off within 30s of its lease"
}
