#!/usr/bin/env bash
# Lease acquisition time: `nomad-init dhcp --once` against busybox udhcpc, in
# the same network namespace pair and against the same dnsmasq.
# Prints medians and the ratio ours/udhcpc (target <= 1.0). Does not assert.
#
#   sudo init/benches/dhcp_vs_udhcpc.sh            # N=10, release build
#   N=20 NOMAD_INIT=/path/to/nomad-init sudo -E init/benches/dhcp_vs_udhcpc.sh
set -euo pipefail

N=${N:-10}
here=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -z "${NOMAD_INIT:-}" ]]; then
    echo "building nomad-init (release; set NOMAD_INIT to skip)..." >&2
    (cd "$here" && cargo build -q -p nomad-init --release)
    NOMAD_INIT="${CARGO_TARGET_DIR:-$here/target}/release/nomad-init"
fi
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces)" >&2; exit 1; }
for t in ip dnsmasq udhcpc; do
    command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

id=$$
srv=ndb-s$id cli=ndb-c$id sif=bs$id cif=bc$id
work=$(mktemp -d)
cleanup() {
    [[ -n "${dns_pid:-}" ]] && kill "$dns_pid" 2>/dev/null || true
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$srv"
ip netns add "$cli"
ip link add "$sif" netns "$srv" type veth peer name "$cif" netns "$cli"
ip -n "$srv" addr add 10.78.0.1/24 dev "$sif"
ip -n "$srv" link set "$sif" up
ip -n "$cli" link set "$cif" up
# --no-ping: dnsmasq would otherwise ping a new address for up to 3 s before
# offering it, which measures dnsmasq, not the client.
ip netns exec "$srv" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --no-ping \
    --interface="$sif" --bind-interfaces --dhcp-range=10.78.0.50,10.78.0.99,255.255.255.0,1h \
    --dhcp-option=option:router,10.78.0.1 --dhcp-option=option:dns-server,10.78.0.1 \
    --dhcp-leasefile="$work/leases" --dhcp-authoritative >"$work/dnsmasq.log" 2>&1 &
dns_pid=$!
sleep 0.5

now_ms() { echo $(( $(date +%s%N) / 1000 )); }   # microseconds
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

time_runs() { # label, command...
    local label=$1; shift
    : >"$work/$label"
    for _ in $(seq "$N"); do
        ip -n "$cli" addr flush dev "$cif"
        local t0; t0=$(now_ms)
        ip netns exec "$cli" "$@" >/dev/null 2>&1 || { echo "$label: run failed: $*" >&2; exit 1; }
        echo $(( $(now_ms) - t0 )) >>"$work/$label"
    done
}

# Warm-up so that dnsmasq has a lease for the MAC and page caches are hot.
ip netns exec "$cli" "$NOMAD_INIT" dhcp --once --no-apply "$cif" >/dev/null
ip netns exec "$cli" udhcpc -q -f -n -i "$cif" -s /bin/true >/dev/null 2>&1

# Interleave the rounds so that drift affects both clients alike.
: >"$work/ours" ; : >"$work/ours_apply" ; : >"$work/udhcpc"
for _ in $(seq "$N"); do
    N=1 time_runs o1 "$NOMAD_INIT" dhcp --once --no-apply "$cif";                          cat "$work/o1" >>"$work/ours"
    N=1 time_runs o2 "$NOMAD_INIT" dhcp --once --resolv-conf "$work/resolv.conf" "$cif";  cat "$work/o2" >>"$work/ours_apply"
    N=1 time_runs u1 udhcpc -q -f -n -i "$cif" -s /bin/true;                              cat "$work/u1" >>"$work/udhcpc"
done

ours=$(median <"$work/ours")
ours_apply=$(median <"$work/ours_apply")
theirs=$(median <"$work/udhcpc")
printf 'binary: %s\n' "$NOMAD_INIT"
printf 'runs per client: %d (median wall time of one lease acquisition, process start to exit)\n' "$N"
printf '  nomad-init dhcp --once --no-apply : %8.1f ms\n' "$(echo "$ours" | awk '{print $1/1000}')"
printf '  nomad-init dhcp --once (applies)  : %8.1f ms\n' "$(echo "$ours_apply" | awk '{print $1/1000}')"
printf '  udhcpc -q -f -n -s /bin/true      : %8.1f ms\n' "$(echo "$theirs" | awk '{print $1/1000}')"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio ours/udhcpc (both apply nothing): %.2f (target <= 1.0)\n", a/b }'
