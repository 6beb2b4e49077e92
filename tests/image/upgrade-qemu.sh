#!/usr/bin/env bash
# A machine's upgrade from its own configuration (issue 11), in QEMU with the real nomad-init
# and the Nomad test double, under SeaBIOS and OVMF (FIRMWARES="bios uefi").
#
# Three builds of the same tree: v1 (NOMADOS_VERSION=<x>-v1), v2, and v3 whose baked pack
# set cannot apply (the hello pack's interval is 0: its template throws). The host serves the
# v2 and v3 slot payloads over HTTP (QEMU's user network reaches the host's 127.0.0.1 as
# 10.0.2.2); the VM gets a user data with `[upgrade]` through fw_cfg.
#
#   upgrade   boot v1 (a private copy, in place): PID 1 upgrades to v2 by itself once Nomad
#             is healthy and reboots; the trial boots v2, its gate passes (Nomad healthy, node
#             ready, pack set applied, its allocations running) and commits; a new power-on
#             stays on v2 and says it runs the requested payload already; the data partition
#             is the same (the ACL token of boot 1 still works).
#   rollback  boot v1 with `[upgrade]` naming v3: it upgrades, the trial of v3 fails its gate
#             (the pack set failed to apply) and the machine comes back on v1 by itself; the
#             console says why and that v3 is not tried again, and Nomad's node meta
#             `nomados.upgrade_rolled_back` (read over the forwarded API with the token) too.
#
# Prints the upgrade downtime (v1's reboot request to v2's commit, which needs the pack
# set's allocations running) and the rollback time (v1's reboot request into the bad trial
# to v1's Nomad healthy again), and the test's run time.
# Environment: KERNEL, NOMAD_BIN (default: the test double), QEMU_ACCEL, FIRMWARES, KEEP=1.
# Run under flock /tmp/nomados-heavy.lock. Exit: 0 pass, 1 fail, 77 skipped.
set -uo pipefail
# shellcheck source=../e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
say() { printf 'upgrade-qemu: %s\n' "$*"; }

( e2e_require ) || exit $?
command -v mtype >/dev/null || skip "mtools not installed"
FIRMWARES=${FIRMWARES:-bios uefi}
if [[ " $FIRMWARES " == *" uefi "* ]]; then
    [ -f "${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE.fd}" ] || skip "OVMF not installed (apt-get install ovmf)"
fi
kernel=$(cached_kernel) || exit $?
nomados_qemu_accel
nomad=$(e2e_nomad_bin) || exit 1
base_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)
base_version=${base_version:-0.1.0}
v1=$base_version-v1 v2=$base_version-v2 v3=$base_version-v3

work=$(mktemp -d /tmp/nomados-upgrade.XXXXXX)
cleanup() {
    stop_vm
    [ -z "${HTTP_PID:-}" ] || kill "$HTTP_PID" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
started=$SECONDS

# build NAME VERSION PACKS: a raw image and its slot payload into $work/NAME.
build() {
    OUT=$work/$1 KERNEL=$kernel NOMAD_BIN=$nomad NOMADOS_VERSION=$2 PACKS=$3 FORMATS=raw \
        TOOLBOX=1 "$REPO/buildimg.sh" >"$work/$1.build.log" 2>&1 ||
        { tail -20 "$work/$1.build.log" >&2; fail "buildimg.sh ($2) failed (log: $work/$1.build.log)"; }
    [ -f "$work/$1/nomados.slot" ] || fail "the $2 build wrote no nomados.slot"
}
cp -r "$REPO/packs" "$work/packs-v3"
sed -i 's/^interval = .*/interval = 0/' "$work/packs-v3/packs.toml"
grep -q '^interval = 0$' "$work/packs-v3/packs.toml" || fail "could not break the v3 pack set"
say "building $v1, $v2 and $v3 (v3's pack set cannot apply) with $(basename "$nomad")"
build v1 "$v1" "$REPO/packs"
build v2 "$v2" "$REPO/packs"
build v3 "$v3" "$work/packs-v3"
say "  built in $((SECONDS - started)) s"

mkdir -p "$work/serve"
cp "$work/v2/nomados.slot" "$work/serve/v2.slot"
cp "$work/v3/nomados.slot" "$work/serve/v3.slot"
sha2=$(sha256sum "$work/serve/v2.slot" | cut -d' ' -f1)
sha3=$(sha256sum "$work/serve/v3.slot" | cut -d' ' -f1)
http_port=$(free_port)
serve_dir "$work/serve" "$http_port" "$work/http.log"
for n in 2 3; do
    sha=$sha2 && [ $n = 3 ] && sha=$sha3
    printf '[upgrade]\nurl = "http://10.0.2.2:%s/v%s.slot"\nsha256 = "%s"\nversion = "%s"\n' \
        "$http_port" "$n" "$sha" "$base_version-v$n" >"$work/user-data-v$n.toml"
done
say "serving v2.slot ($(du -h "$work/serve/v2.slot" | cut -f1)) and v3.slot on 127.0.0.1:$http_port"

# boot FW IMAGE LOG USERDATA: power on (in place) with the user data in fw_cfg; sets PORT.
boot() {
    : >"$3"
    PORT=$(free_port)
    CONSOLE_LOG=$3 NOMAD_PORT=$PORT DISK_MODE=in-place DISK_FORMAT=raw \
        QEMU_EXTRA_ARGS="-fw_cfg name=opt/nomados/user-data,file=$4" \
        "$REPO/qemu/run-$1.sh" "$2" >>"$3.qemu" 2>&1 &
    VM_PID=$!
}
# The guest fsyncs what it writes on the ESP; give QEMU a moment, then stop it.
halt() { sleep 2; stop_vm; VM_PID=; }
# wait_nth LOG REGEX N SECONDS: until REGEX has shown up N times (reboots share one log).
wait_nth() {
    local log=$1 pattern=$2 n=$3 limit=$(($4 * ${TIMEOUT_SCALE:-1})) start=$SECONDS
    while ((SECONDS - start < limit)); do
        (($(grep -acE -- "$pattern" "$log") >= n)) && return 0
        kill -0 "$VM_PID" 2>/dev/null || fail_log "$log" "$(qemu_exit_reason) before '$pattern' showed up $n times"
        sleep 0.5
    done
    fail_log "$log" "'$pattern' did not show up $n times within ${limit}s"
}
expect() { grep -aqE -- "$2" "$1" || fail_log "$1" "the console does not say '$2'"; }
api() { curl -fsS --max-time 20 -H "X-Nomad-Token: $token" "http://127.0.0.1:$PORT$1"; }

one_firmware() {
    local fw=$1 img log t_down t_up
    trap stop_vm EXIT  # a failure ends this subshell; its VM must not outlive it
    say "== $fw upgrade: $v1 upgrades itself to $v2, the trial commits, the next boot stays"
    img=$work/$fw-upgrade.raw
    cp --sparse=always "$work/v1/nomados.raw" "$img"
    log=$work/$fw-upgrade.log
    boot "$fw" "$img" "$log" "$work/user-data-v2.toml"
    wait_for "$log" "NomadOS $v1 in slot a" 120
    wait_for "$log" "upgrade: the machine configuration asks for NomadOS $v2" 240
    wait_for "$log" 'upgrade: armed in [0-9.]+ s; rebooting into the trial' 300
    wait_for "$log" 'Reboot requested: shutting down' 60
    t_down=$SECONDS
    wait_for "$log" 'TRIAL BOOT of slot b' 180
    expect "$log" "NomadOS $v2 in slot b"
    wait_for "$log" 'UPGRADE COMMITTED: slot b passed its health gate \([1-9][0-9]* allocation' 300
    t_up=$SECONDS
    expect "$log" 'boot 2 of this data partition'
    token=$(console_token "$log")
    [ -n "$token" ] || fail_log "$log" "no ACL bootstrap token on the console of the first boot"
    halt
    say "  $v1 -> $v2: downtime $((t_up - t_down)) s (reboot request to the commit with the pack set's allocations running; accel $NOMADOS_ACCEL)"
    log=$work/$fw-upgrade-again.log
    boot "$fw" "$img" "$log" "$work/user-data-v2.toml"
    wait_for "$log" "NomadOS $v2 in slot b" 120
    wait_for "$log" 'running slot b \(the default\)' 60
    wait_for "$log" "upgrade: slot b runs NomadOS $v2 \\(${sha2:0:12}\\) already" 240
    # The VM was killed (a power cut), so the trial boot's count may not have reached the
    # disk; boot 1's ACL token still working is what proves Nomad's state was kept.
    expect "$log" 'boot [23] of this data partition'
    api /v1/jobs >/dev/null || fail_log "$log" "the ACL token of boot 1 no longer works: Nomad's state was lost"
    halt
    say "PASS $fw upgrade: committed $v2 stays, data partition and Nomad's state kept"
    echo "$fw upgrade_downtime_s=$((t_up - t_down))" >>"$work/figures"

    say "== $fw rollback: $v3 (its pack set cannot apply) comes back on $v1 by itself"
    img=$work/$fw-rollback.raw
    cp --sparse=always "$work/v1/nomados.raw" "$img"
    log=$work/$fw-rollback.log
    boot "$fw" "$img" "$log" "$work/user-data-v3.toml"
    wait_for "$log" 'upgrade: armed in [0-9.]+ s; rebooting into the trial' 300
    wait_for "$log" 'Reboot requested: shutting down' 60
    t_down=$SECONDS
    wait_for "$log" "NomadOS $v3 in slot b" 180
    wait_for "$log" 'UPGRADE ROLLED BACK: slot b: the pack set failed to apply' 300
    wait_nth "$log" "NomadOS $v1 in slot a" 2 180
    wait_nth "$log" 'nomad API healthy' 3 180
    t_up=$SECONDS
    wait_for "$log" "upgrade: NOT trying NomadOS $v3 \\(${sha3:0:12}\\) again" 120
    expect "$log" 'boot 3 of this data partition'
    token=$(console_token "$log")
    local id meta
    id=$(api /v1/nodes | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ID"])') ||
        fail_log "$log" "GET /v1/nodes with the token failed"
    meta=$(api "/v1/node/$id" | python3 -c 'import json,sys; m=json.load(sys.stdin).get("Meta") or {}; print(m.get("nomados.slot",""), m.get("nomados.upgrade_rolled_back",""))') ||
        fail_log "$log" "GET /v1/node/$id failed"
    [[ "$meta" == "a "*"pack set failed to apply"* ]] ||
        fail_log "$log" "node meta nomados.slot / nomados.upgrade_rolled_back say '$meta'"
    halt
    say "  node meta: nomados.slot / nomados.upgrade_rolled_back = ${meta:0:140}"
    say "  $v1 -> $v3 -> $v1: rollback $((t_up - t_down)) s (reboot request into the trial to $v1's Nomad healthy again)"
    say "PASS $fw rollback"
    echo "$fw rollback_s=$((t_up - t_down))" >>"$work/figures"
}

rc=0
for fw in $FIRMWARES; do
    (one_firmware "$fw") || rc=1
done
[ ! -f "$work/figures" ] || sed 's/^/upgrade-qemu: figure /' "$work/figures"
say "run time $((SECONDS - started)) s (accel $NOMADOS_ACCEL)"
[ "$rc" = 0 ] && say "all passed" || KEEP=1
exit "$rc"
