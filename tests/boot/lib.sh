# shellcheck shell=bash disable=SC2016,SC2034  # guest scripts are single-quoted on purpose
# Helpers for the QEMU boot tests. Source from a test script; see run.sh for the contract:
# exit 0 = pass, 77 = skip (reason on stderr), anything else = fail.

BOOT_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BOOT_TEST_DIR/../.." && pwd)
# shellcheck source=../../qemu/common.sh
. "$REPO/qemu/common.sh"

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "  $*" >&2; }

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

# The /init body of the network boot tests: token, command line, DHCP lease, power off.
BOOT_OK_BODY='echo NOMADOS-BOOT-OK
echo "NOMADOS-CMDLINE $(cat /proc/cmdline)"
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 2 -s /udhcpc.sh || echo NOMADOS-DHCP-FAILED
poweroff -f'

# A free TCP port on 127.0.0.1 for the hostfwd, so tests never fight over 4646.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

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

stop_vm() {
    if [ -n "${VM_PID:-}" ] && kill -0 "$VM_PID" 2>/dev/null; then
        kill "$VM_PID" 2>/dev/null
        sleep 0.5
        kill -9 "$VM_PID" 2>/dev/null || true
    fi
    wait "$VM_PID" 2>/dev/null || true
    [ -n "${TEST_TMP:-}" ] && rm -rf "$TEST_TMP"
}

# wait_for LOG PATTERN SECONDS: wait until an extended regex appears in LOG. Fails early if
# QEMU exits first. SECONDS is multiplied by TIMEOUT_SCALE (TCG is several times slower).
wait_for() {
    local log=$1 pattern=$2 limit=$(( $3 * ${TIMEOUT_SCALE:-1} )) start=$SECONDS
    while (( SECONDS - start < limit )); do
        grep -qE -- "$pattern" "$log" && return 0
        if ! kill -0 "$VM_PID" 2>/dev/null; then
            grep -qE -- "$pattern" "$log" && return 0
            show_log "$log"
            fail "QEMU exited before '$pattern' appeared on the console"
        fi
        sleep "${POLL_INTERVAL:-0.5}"
    done
    show_log "$log"
    fail "'$pattern' did not appear on the console within ${limit}s"
}

# wait_exit SECONDS: wait for QEMU to exit by itself (unscaled: shutdown is quick even on TCG).
wait_exit() {
    local limit=$1 start=$SECONDS
    while kill -0 "$VM_PID" 2>/dev/null; do
        (( SECONDS - start < limit )) || return 1
        sleep "${POLL_INTERVAL:-0.2}"
    done
    return 0
}

show_log() {
    echo "---- last console lines ($1) ----" >&2
    tail -n 25 "$1" | sed 's/^/  | /' >&2
    echo "----" >&2
}

# Assertions on the console of a BOOT_OK_BODY guest on QEMU user networking.
assert_boot_ok() {
    local log=$1
    wait_for "$log" 'NOMADOS-BOOT-OK' 40
    # The whole lease line (it ends with interface=), not a half-written one.
    wait_for "$log" 'NOMADOS-LEASE .* interface=|NOMADOS-DHCP-FAILED' 30
    grep -q 'NOMADOS-DHCP-FAILED' "$log" && { show_log "$log"; fail "udhcpc got no lease"; }
    grep -qE 'NOMADOS-LEASE ip=10\.0\.2\.15 router=10\.0\.2\.2 ' "$log" \
        || { show_log "$log"; fail "lease is not QEMU's user-net 10.0.2.15 via 10.0.2.2"; }
    grep -qE 'NOMADOS-CMDLINE .*console=tty0 console=ttyS0,115200' "$log" \
        || { show_log "$log"; fail "kernel command line lacks 'console=tty0 console=ttyS0,115200'"; }
    note "$(grep -m1 -o 'NOMADOS-LEASE.*' "$log" | tr -d '\r')"
    wait_exit 30 || fail "guest did not power off within 30s of its lease"
}
