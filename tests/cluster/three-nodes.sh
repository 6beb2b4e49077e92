#!/usr/bin/env bash
# One image, three machines, one cluster (issue 10). The real disk image (nomad-init as PID 1;
# the Nomad test double as /usr/bin/nomad, or NOMAD_BIN) is booted three times at once under
# QEMU, each machine with its own copy-on-write disk, its own MAC and its own user data in
# fw_cfg (`opt/nomados/user-data`): node-1..3, all three servers and clients (role "both")
# with bootstrap_expect = 3, retry_join naming the three fixed addresses, a gossip key and
# the ACL bootstrap secret (so this test knows the management token).
#
# The network: a network namespace with a bridge (10.77.0.1/24) and three tap devices, and
# dnsmasq on the bridge with fixed MAC -> address leases (10.77.0.11-13, hostname node-N);
# QEMU runs inside the namespace and this script reaches each machine's API at
# http://10.77.0.1N:4646 on the bridge.
#
# Asserted for each machine: OUR DHCP client's fixed lease; the user data from fw_cfg
# applied; /v1/agent/self shows its own name and meta; its members list shows all three
# servers alive at their addresses; the three name the same leader; the default pack set
# applied (job `hello`, owned by nomados). With a real Nomad: one leader and the system job
# `hello` running on all three nodes. Then node-3 is powered off (it drains itself, with its
# token: others can take its work), node-1 sees it failed, node-3 boots again and comes back
# eligible and alive, and all three power off cleanly.
#
# Prints the figures: power-on -> all three see each other (and, with a real Nomad,
# -> `hello` running on all three nodes).
#
#   tests/cluster/three-nodes.sh
#
# Needs root (namespace, taps), QEMU, dnsmasq, a cached kernel. Takes the heavy lock
# (/tmp/nomados-heavy.lock) for the whole run. Environment: NOMAD_BIN, KERNEL, QEMU_ACCEL,
# MEM (default 512M per machine), SMP (default 1 per machine: three guests share the host),
# KEEP=1 keeps the work directory.
# Exit: 0 pass, 1 fail, 77 a prerequisite is missing (nothing ran).
set -uo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "SKIP: needs root (network namespace, bridge, tap devices)" >&2
    exit 77
fi
if [ -z "${NOMADOS_HEAVY_LOCKED:-}" ]; then
    command -v flock >/dev/null || { echo "SKIP: flock not installed" >&2; exit 77; }
    exec env NOMADOS_HEAVY_LOCKED=1 flock /tmp/nomados-heavy.lock "$0" "$@"
fi

# shellcheck source=../e2e/lib.sh
. "$REPO/tests/e2e/lib.sh"
( e2e_require ) || exit $?
for t in ip dnsmasq; do
    command -v "$t" >/dev/null || skip "$t not installed"
done
[ -e /dev/net/tun ] || skip "no /dev/net/tun (tap devices)"
kernel=$(cached_kernel) || exit $?
nomados_qemu_accel
export QEMU_ACCEL=$NOMADOS_ACCEL TIMEOUT_SCALE

NODES=(1 2 3)
SUBNET=10.77.0
NS=nomados-cluster-$$
work=$(mktemp -d /tmp/nomados-cluster.XXXXXX)
declare -A PIDS=()
DNSMASQ_PID=

cleanup() {
    local i
    for i in "${!PIDS[@]}"; do
        kill "${PIDS[$i]}" 2>/dev/null
    done
    sleep 0.5
    for i in "${!PIDS[@]}"; do
        kill -9 "${PIDS[$i]}" 2>/dev/null
        wait "${PIDS[$i]}" 2>/dev/null
    done
    [ -z "$DNSMASQ_PID" ] || { kill "$DNSMASQ_PID" 2>/dev/null; wait "$DNSMASQ_PID" 2>/dev/null; }
    ip netns del "$NS" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

addr() { echo "$SUBNET.1$1"; }
mac() { printf '52:54:00:77:00:%02x' "$1"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
nsx() { ip netns exec "$NS" "$@"; }

# api N PATH: GET from node N's API with the management token (header read from a file:
# the token is not put on a command line).
api() {
    nsx curl -fsS --max-time 10 -H @"$work/token.hdr" "http://$(addr "$1"):4646$2"
}

# --- the image -------------------------------------------------------------------------
echo "cluster: kernel $kernel, accel $NOMADOS_ACCEL (timeouts x$TIMEOUT_SCALE)" >&2
nomad=$(e2e_nomad_bin) || exit 1
real_nomad=0
[ -n "${NOMAD_BIN:-}" ] && real_nomad=1
echo "cluster: nomad $nomad ($([ $real_nomad = 1 ] && echo real || echo 'test double'))" >&2
( e2e_build_disk "$work/out" "$kernel" "$nomad" ) || exit 1

# --- the network -----------------------------------------------------------------------
ip netns add "$NS" || fail "cannot create network namespace $NS"
nsx ip link set lo up
nsx ip link add br0 type bridge || fail "cannot create the bridge"
nsx ip addr add "$SUBNET.1/24" dev br0
nsx ip link set br0 up
hosts=()
for i in "${NODES[@]}"; do
    nsx ip tuntap add dev "tap$i" mode tap || fail "cannot create tap$i"
    nsx ip link set "tap$i" master br0
    nsx ip link set "tap$i" up
    hosts+=("--dhcp-host=$(mac "$i"),$(addr "$i"),node-$i")
done
# `ip netns exec` execs its command: $! is dnsmasq's (and below QEMU's) own PID.
ip netns exec "$NS" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
    --dhcp-range="$SUBNET.100,$SUBNET.150,255.255.255.0,600" --dhcp-authoritative \
    "${hosts[@]}" --dhcp-leasefile="$work/dnsmasq.leases" --log-dhcp \
    --log-facility="$work/dnsmasq.log" 2>"$work/dnsmasq.stderr" &
DNSMASQ_PID=$!

# --- user data ---------------------------------------------------------------------------
secret=$(python3 -c 'import uuid; print(uuid.uuid4())')
gossip=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
umask 077
printf 'X-Nomad-Token: %s\n' "$secret" >"$work/token.hdr"
join=$(printf '"%s", ' "$(addr 1)" "$(addr 2)" "$(addr 3)")
for i in "${NODES[@]}"; do
    cat >"$work/node-$i.toml" <<EOF
# NomadOS user data: node $i of a three-node cluster (tests/cluster/three-nodes.sh)
[nomad]
role = "both"
bootstrap_expect = 3
retry_join = [${join%, }]
name = "node-$i"
datacenter = "dc1"

[nomad.meta]
cluster_test_node = "node-$i"

[secrets]
acl_bootstrap_secret = "$secret"
gossip_key = "$gossip"
EOF
    qemu-img create -q -f qcow2 -b "$work/out/nomados.qcow2" -F qcow2 "$work/node-$i.qcow2" ||
        fail "qemu-img create for node-$i failed"
done
umask 022

# boot N: node N in the background (QEMU inside the namespace, on tapN), console into
# node-N.log.
boot() {
    local i=$1
    : >"$work/node-$i.log"
    ip netns exec "$NS" env CONSOLE_LOG="$work/node-$i.log" QMP_SOCK="$work/node-$i.qmp" NET_TAP="tap$i" \
        NIC_MAC="$(mac "$i")" MEM="${MEM:-512M}" SMP="${SMP:-1}" DISK_MODE=in-place \
        QEMU_EXTRA_ARGS="-fw_cfg name=opt/nomados/user-data,file=$work/node-$i.toml" \
        "$REPO/qemu/run-bios.sh" "$work/node-$i.qcow2" &
    PIDS[$i]=$!
}

# powerdown N: ACPI power button; QEMU must exit within 30 s with a clean shutdown.
powerdown_wait() {
    local i=$1 log=$work/node-$1.log want
    VM_PID=${PIDS[$i]}
    wait_exit 30 || fail_log "$log" "node-$i: QEMU still running 30 s after system_powerdown"
    unset "PIDS[$i]"
    for want in 'Poweroff requested: shutting down' 'shutdown: unmounted filesystems' 'reboot: Power down'; do
        grep -qE -- "$want" "$log" || fail_log "$log" "node-$i: '$want' missing from the console"
    done
}
powerdown() {
    "$REPO/qemu/qmp.py" --wait 5 "$work/node-$1.qmp" system_powerdown >/dev/null ||
        fail "node-$1: QMP system_powerdown failed"
}

# members_ok N: node N's members list has the three servers alive at their addresses.
members_ok() {
    local m
    m=$(api "$1" /v1/agent/members 2>/dev/null) || return 1
    M=$m python3 - "$SUBNET" <<'PY'
import json, os, sys
m = json.loads(os.environ["M"])
got = sorted((x["Name"], x["Addr"], x["Status"]) for x in m.get("Members") or [])
want = [(f"node-{i}.global", f"{sys.argv[1]}.1{i}", "alive") for i in (1, 2, 3)]
sys.exit(0 if got == want else 1)
PY
}

# member_status N NAME: NAME's status in node N's members list.
member_status() {
    api "$1" /v1/agent/members 2>/dev/null | python3 -c '
import json, sys
print(next((m["Status"] for m in json.load(sys.stdin)["Members"] if m["Name"] == sys.argv[1]), "absent"))' "$2"
}

# poll SECONDS WHAT CMD...: until CMD succeeds (SECONDS scaled by TIMEOUT_SCALE).
poll() {
    local limit=$(($1 * TIMEOUT_SCALE)) what=$2 start=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - start < limit)) || fail "$what: not within ${limit}s"
        local i
        for i in "${!PIDS[@]}"; do
            kill -0 "${PIDS[$i]}" 2>/dev/null || { VM_PID=${PIDS[$i]}; fail_log "$work/node-$i.log" "node-$i: $(qemu_exit_reason) while waiting for: $what"; }
        done
        sleep 0.5
    done
}

# --- power on ----------------------------------------------------------------------------
t0=$(now)
for i in "${NODES[@]}"; do boot "$i"; done
echo "cluster: three machines powered on (MEM ${MEM:-512M}, SMP ${SMP:-1} each)" >&2

for i in "${NODES[@]}"; do
    log=$work/node-$i.log
    VM_PID=${PIDS[$i]}
    wait_for "$log" "eth0: bound $SUBNET\\.1$i/24 from $SUBNET\\.1" 90
    wait_for "$log" 'nomad API healthy' 90
    for want in "machine config from fw_cfg: applied; provides role both; bootstrap_expect 3; retry_join (3)" \
        "agent -config=/run/nomados/machine/agent.json -config=/run/nomados/machine/nomad.d"; do
        grep -qF -- "$want" "$log" || fail_log "$log" "node-$i: no '$want' on the console"
    done
    # The secret is the management token: shown once in the bootstrap frame, nowhere else.
    grep -F "$secret" "$log" | grep -qv 'Secret ID:' &&
        fail_log "$log" "node-$i: the ACL bootstrap secret reached the console outside the token frame"
    note "node-$i: lease $(addr "$i") from dnsmasq, user data from fw_cfg, nomad up"
done

all_members_ok() { members_ok 1 && members_ok 2 && members_ok 3; }
poll 120 "all three servers alive in every members list" all_members_ok
seen=$(since "$t0")
note "every members list: node-1..3.global alive at $SUBNET.11-13"

leaders=()
for i in "${NODES[@]}"; do
    self=$(api "$i" /v1/agent/self) || fail "node-$i: GET /v1/agent/self failed"
    S=$self python3 - "$i" <<'PY' || fail "node-$i: /v1/agent/self does not show its own user data"
import json, os, sys
i = sys.argv[1]
c = json.loads(os.environ["S"])["config"]
meta = (c.get("Client") or {}).get("Meta") or {}
problems = []
if c.get("NodeName") != f"node-{i}":
    problems.append(f"NodeName {c.get('NodeName')!r}")
if meta.get("cluster_test_node") != f"node-{i}":
    problems.append(f"Client.Meta.cluster_test_node {meta.get('cluster_test_node')!r}")
if meta.get("nomados.config_source") != "fw_cfg":
    problems.append(f"Client.Meta['nomados.config_source'] {meta.get('nomados.config_source')!r}")
if not (c.get("Server") or {}).get("Enabled") or not (c.get("Client") or {}).get("Enabled"):
    problems.append("not both server and client")
if problems:
    sys.exit("; ".join(problems))
PY
    leaders+=("$(nsx curl -fsS --max-time 10 "http://$(addr "$i"):4646/v1/status/leader")")
done
[ -n "${leaders[0]}" ] && [ "${leaders[0]}" != '""' ] || fail "node-1 reports no leader"
for l in "${leaders[@]}"; do
    [ "$l" = "${leaders[0]}" ] || fail "the nodes name different leaders: ${leaders[*]}"
done
note "agent/self: each node shows its own name and meta; leader ${leaders[0]} on all three"

# The pack set, applied by each machine's PID 1 (with a real Nomad, to the one cluster).
for i in "${NODES[@]}"; do
    VM_PID=${PIDS[$i]}
    wait_for "$work/node-$i.log" 'packs: Apply: [0-9]+ created, [0-9]+ updated, [0-9]+ unchanged, [0-9]+ deleted, 0 failed' 120
    job=$(api "$i" /v1/job/hello) || fail "node-$i: GET /v1/job/hello failed"
    J=$job python3 -c 'import json, os, sys; m = json.loads(os.environ["J"]).get("Meta") or {}; sys.exit(0 if m.get("nomados.owner") else f"hello has no nomados.owner: {m}")' ||
        fail "node-$i: job hello is not the pack set's"
done
applied=$(since "$t0")
note "the pack set applied on each machine (job hello, owned by nomados)"

# hello_everywhere: the system job runs on three distinct nodes (one cluster, real Nomad),
# or on each machine's own node (the double: three separate schedulers).
hello_running() {
    local i allocs
    for i in "$@"; do
        allocs=$(api "$i" /v1/job/hello/allocations 2>/dev/null) || return 1
        A=$allocs python3 -c '
import json, os, sys
nodes = {a["NodeID"] for a in json.loads(os.environ["A"]) if a.get("ClientStatus") == "running"}
sys.exit(0 if len(nodes) >= int(sys.argv[1]) else 1)' "$([ $real_nomad = 1 ] && echo 3 || echo 1)" || return 1
    done
}
if [ $real_nomad = 1 ]; then
    poll 180 "the system job hello running on all three nodes" hello_running 1
    running=$(since "$t0")
else
    poll 60 "job hello running on each machine's node" hello_running 1 2 3
fi

# --- node-3 off, seen failed, back on: eligible again -------------------------------------
powerdown 3
powerdown_wait 3
grep -qE 'drained node' "$work/node-3.log" ||
    fail_log "$work/node-3.log" "node-3 did not drain itself at shutdown (others could take its work)"
note "node-3: drained itself at shutdown (with its token) and powered off"
node3_failed() { [ "$(member_status 1 node-3.global)" = failed ]; }
poll 60 "node-1 sees node-3 failed" node3_failed
has_leader() {
    leader=$(nsx curl -fsS --max-time 10 "http://$(addr 1):4646/v1/status/leader") &&
        [ -n "$leader" ] && [ "$leader" != '""' ]
}
poll 60 "node-1 has a leader with node-3 down (2 of 3 are a quorum)" has_leader
note "node-1 sees node-3 failed and keeps a leader ($leader)"
mv "$work/node-3.log" "$work/node-3.first.log"
boot 3
VM_PID=${PIDS[3]}
wait_for "$work/node-3.log" 'nomad API healthy' 90
wait_for "$work/node-3.log" 'node node-3 \([^)]*\) (is eligible for work|was (still draining|ineligible); marked it eligible for work again)' 120
note "node-3 after reboot: $(grep -oE 'node node-3 \([^)]*\) (is eligible for work|was (still draining|ineligible); marked it eligible for work again)' "$work/node-3.log" | head -1)"
poll 60 "node-3 alive again in every members list" all_members_ok

# --- power off ---------------------------------------------------------------------------
for i in "${NODES[@]}"; do powerdown "$i"; done
for i in "${NODES[@]}"; do powerdown_wait "$i"; done
note "all three powered off cleanly"

echo "figure: power-on -> all three servers see each other alive: ${seen} s (accel $NOMADOS_ACCEL, 3 VMs at once)"
echo "figure: power-on -> pack set applied on all three: ${applied} s"
[ $real_nomad = 0 ] || echo "figure: power-on -> system job hello running on all three nodes: ${running} s"
echo "PASS: three nodes from one image ($([ $real_nomad = 1 ] && echo 'real Nomad' || echo 'test double'))"
