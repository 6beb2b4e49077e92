#!/usr/bin/env bash
# The pack applier end to end on this machine, without a VM or a Nomad binary: starts the
# Nomad API test double with the appliance's own agent config (port moved to a free one),
# then plans, applies and re-applies the default pack set. Run through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug
work=$(mktemp -d)
trap 'kill "$double_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '{"bind_addr": "127.0.0.1", "ports": {"http": %s}, "data_dir": "%s"}\n' "$port" "$work/data" > "$work/port.json"
"$bin/nomad-double" agent -config config/init.json -config "$work/port.json" > "$work/agent.log" 2>&1 &
double_pid=$!
for _ in $(seq 100); do grep -q "Nomad agent started" "$work/agent.log" && break; sleep 0.1; done
export NOMAD_ADDR=http://127.0.0.1:$port NOMADOS_PACK_CACHE=$work/cache
# ACLs are on in the shipped config: bootstrap them, as PID 1 does at a machine's first boot.
NOMAD_TOKEN=$(curl -fsS -X POST "$NOMAD_ADDR/v1/acl/bootstrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretID"])')
export NOMAD_TOKEN

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$bin/nomad-init" packs validate packs/packs.toml
step "$bin/nomad-init" packs plan packs/packs.toml || true
step "$bin/nomad-init" packs apply --wait packs/packs.toml
step "$bin/nomad-init" packs apply packs/packs.toml
printf '\njobs now in Nomad: %s\n' "$(curl -s -H "X-Nomad-Token: $NOMAD_TOKEN" "$NOMAD_ADDR/v1/jobs" | python3 -c 'import json,sys; print(", ".join(j["ID"] for j in json.load(sys.stdin)))')"
