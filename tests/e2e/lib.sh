# shellcheck shell=bash
# Helpers for the end-to-end appliance tests (tests/e2e/run.sh, boot-figures.sh): build the
# real image (static nomad-init as PID 1, Nomad or its test double, init.json, packs/), boot
# it under QEMU through qemu/run-*.sh, and read the serial console.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
# shellcheck source=../../qemu/common.sh
. "$REPO/qemu/common.sh"
# shellcheck source=../lib/vm.sh
. "$REPO/tests/lib/vm.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
TRIPLE=x86_64-unknown-linux-gnu


e2e_require() {
    local t
    for t in "$QEMU" qemu-img python3 curl xz; do
        command -v "$t" >/dev/null || skip "$t not installed"
    done
}

# The Nomad the image carries: $NOMAD_BIN, else the test double (built here, debug).
e2e_nomad_bin() {
    if [ -n "${NOMAD_BIN:-}" ]; then
        [ -f "$NOMAD_BIN" ] || fail "NOMAD_BIN=$NOMAD_BIN does not exist"
        echo "$NOMAD_BIN"
        return
    fi
    (cd "$REPO" && cargo build -q -p nomad-double) >&2 || fail "building nomad-double failed"
    echo "$CARGO_TARGET_DIR/debug/nomad-double"
}

# e2e_build_disk OUT KERNEL NOMAD: the qcow2 disk image with everything the real one has.
e2e_build_disk() {
    local out=$1 kernel=$2 nomad=$3
    OUT=$out KERNEL=$kernel NOMAD_BIN=$nomad FORMATS=qcow2 TOOLBOX=1 \
        "$REPO/buildimg.sh" >"$out.build.log" 2>&1 ||
        { tail -20 "$out.build.log" >&2; fail "buildimg.sh failed (log: $out.build.log)"; }
}

# e2e_build_pxe DIR KERNEL NOMAD: the same root filesystem as PXE artifacts (initramfs).
# Uses the static nomad-init that e2e_build_disk built. PXE_TOOLBOX=0: no busybox, no shell.
e2e_build_pxe() {
    local dir=$1 kernel=$2 nomad=$3 staging=$1.rootfs toolbox=()
    local init=${INIT_BIN:-$CARGO_TARGET_DIR/$TRIPLE/release/nomad-init}
    [ -f "$init" ] || fail "static nomad-init not found at $init (build the disk first)"
    [ "${PXE_TOOLBOX:-1}" = 0 ] || toolbox=(--toolbox "$(command -v busybox)")
    rm -rf "$staging"
    "$CARGO_TARGET_DIR/release/nomados-image" rootfs --staging "$staging" --init "$init" \
        --nomad "$nomad" --packs "$REPO/packs" --init-json "$REPO/config/init.json" \
        --nomados-toml "$REPO/config/nomados.toml" "${toolbox[@]}" \
        >"$dir.build.log" 2>&1 || { tail -20 "$dir.build.log" >&2; fail "staging the PXE rootfs failed"; }
    "$REPO/image/pxe.sh" "$staging" "$kernel" "$dir" >>"$dir.build.log" 2>&1 ||
        { tail -20 "$dir.build.log" >&2; fail "image/pxe.sh failed"; }
}

# serve_dir DIR PORT LOG: Python's http.server for DIR on 127.0.0.1:PORT in the background
# (its PID in HTTP_PID, its output in LOG). The server must not inherit the heavy lock's
# descriptor (flock's child would keep the lock held after the test): everything above
# stderr is closed before it starts.
serve_dir() {
    python3 -c 'import os, sys; os.closerange(3, 65536); os.execvp(sys.argv[1], sys.argv[1:])' \
        python3 -m http.server --bind 127.0.0.1 --directory "$1" "$2" >"$3" 2>&1 &
    HTTP_PID=$!
}

# start_vm LOG QMP CMD...: a qemu/run-*.sh script in the background, console into LOG,
# QMP socket at QMP, API forwarded to 127.0.0.1:$PORT (set here). Killed on exit.
start_vm() {
    local log=$1 qmp=$2
    shift 2
    : >"$log"
    PORT=$(free_port)
    CONSOLE_LOG=$log QMP_SOCK=$qmp NOMAD_PORT=$PORT NETDEV_EXTRA=,hostname=e2e-node "$@" &
    VM_PID=$!
    trap 'stop_vm' EXIT
}

# The management token PID 1 showed on the console at the first boot of a data partition
# (ACLs are on by default); empty when LOG has none.
console_token() {
    tr -d '\r' <"$1" | grep -oE 'Secret ID: +[0-9a-f-]{36}' | head -1 | awk '{print $3}'
}

# The appliance is up: OUR DHCP client's lease from QEMU's server, hostname from option
# 12, Nomad healthy, ACLs bootstrapped (the token on the console of the first boot, read
# from TOKEN_LOG, default LOG), the default pack set applied and visible over the
# forwarded port with that token, and refused without it.
assert_appliance_up() {
    local log=$1 token_log=${2:-$1}
    wait_for "$log" 'boot finished' 60
    wait_for "$log" 'eth0: bound 10\.0\.2\.15/24 from 10\.0\.2\.2' 30
    # PID 1 logs the first lease and the lease's hostname after 'bound' and before it starts
    # Nomad: read them once Nomad is up, not the instant 'bound' appears (that raced).
    wait_for "$log" 'nomad API healthy' 60
    grep -qE 'network: first lease after' "$log" || fail_log "$log" "no 'first lease' line"
    grep -qE 'hostname is e2e-node \(from DHCP on eth0\)' "$log" ||
        fail_log "$log" "the lease's hostname (option 12) was not applied"
    # The applier is a child process: its report line, then PID 1's word on its exit.
    wait_for "$log" 'packs: Apply: [0-9]+ created, [0-9]+ updated, [0-9]+ unchanged, [0-9]+ deleted, [0-9]+ failed' 60
    grep -qE 'packs: Apply: [0-9]+ created, [0-9]+ updated, [0-9]+ unchanged, [0-9]+ deleted, 0 failed' "$log" ||
        fail_log "$log" "the pack set did not apply cleanly"
    wait_for "$log" 'packs: apply finished in' 30
    local jobs job token anonymous
    token=$(console_token "$token_log")
    [ -n "$token" ] || fail_log "$token_log" "no ACL bootstrap token on the console of the first boot"
    grep -q 'nomad ACLs bootstrapped: management token accessor\|nomad ACL token: ' "$log" ||
        fail_log "$log" "PID 1 neither bootstrapped ACLs nor found its token"
    anonymous=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "http://127.0.0.1:$PORT/v1/jobs")
    [ "$anonymous" = 403 ] || fail "GET /v1/jobs without a token answered $anonymous, not 403 (ACLs off?)"
    jobs=$(curl -fsS --max-time 20 -H "X-Nomad-Token: $token" "http://127.0.0.1:$PORT/v1/jobs") ||
        fail "GET /v1/jobs with the console's token over the forwarded port 127.0.0.1:$PORT failed"
    job=$(curl -fsS --max-time 20 -H "X-Nomad-Token: $token" "http://127.0.0.1:$PORT/v1/job/hello") ||
        fail "GET /v1/job/hello failed (jobs: $jobs)"
    JOBS=$jobs JOB=$job python3 - <<'PY' || fail "job hello is missing or not owned by nomados"
import json, os, sys
jobs = json.loads(os.environ["JOBS"])
ids = [j.get("ID") for j in jobs]
if "hello" not in ids:
    sys.exit(f"/v1/jobs lists {ids}, not hello")
meta = json.loads(os.environ["JOB"]).get("Meta") or {}
if not meta.get("nomados.owner"):
    sys.exit(f"job hello has no meta nomados.owner: {meta}")
print(f"  /v1/jobs lists hello, meta nomados.owner={meta['nomados.owner']}", file=sys.stderr)
PY
    # The task started on this machine: its command (/sbin/nomad-init) exists in the image.
    local allocs tries=0
    while :; do
        allocs=$(curl -fsS --max-time 20 -H "X-Nomad-Token: $token" \
            "http://127.0.0.1:$PORT/v1/job/hello/allocations") ||
            fail "GET /v1/job/hello/allocations failed"
        ALLOCS=$allocs python3 - <<'PY' && break
import json, os, sys
allocs = json.loads(os.environ["ALLOCS"])
states = [(a.get("ClientStatus"), a.get("TaskStates")) for a in allocs]
if any(s == "running" for s, _ in states):
    print("  job hello: an allocation is running on this node", file=sys.stderr)
    sys.exit(0)
if any(s in ("failed", "lost") for s, _ in states):
    print(f"job hello's allocation did not start: {states}", file=sys.stderr)
    sys.exit(2)
sys.exit(1)
PY
        [ $? = 2 ] && fail_log "$log" "the hello pack's task did not start"
        tries=$((tries + 1))
        [ "$tries" -lt $((30 * ${TIMEOUT_SCALE:-1})) ] || fail "no running allocation of job hello: $allocs"
        sleep 1
    done
}

# ACPI power button through QMP; QEMU must exit within 30 s (not scaled: the deadline is
# the product's) and the console must show the whole shutdown sequence.
assert_powerdown() {
    local log=$1 qmp=$2 start
    "$REPO/qemu/qmp.py" --wait 5 "$qmp" system_powerdown >/dev/null || fail "QMP system_powerdown failed"
    start=$SECONDS
    wait_exit 30 || fail_log "$log" "QEMU still running 30 s after system_powerdown"
    local want
    # The drain asks Nomad with the node's token: anonymous, it would be "API unavailable".
    for want in 'ACPI power button event|power button pressed' 'Poweroff requested: shutting down' \
        'not draining: no other node could take|drained node' \
        'released the network in' 'shutdown: unmounted filesystems' 'powering off' 'reboot: Power down'; do
        grep -qE -- "$want" "$log" || fail_log "$log" "shutdown: '$want' missing from the console"
    done
    note "powered off $((SECONDS - start)) s after system_powerdown"
}
