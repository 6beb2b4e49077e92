#!/usr/bin/env bash
# The machine configuration at boot (issue 10), with nomad-init as the real PID 1 of a
# kernel + initramfs guest and the nomad-double as Nomad. One image, three machines:
#   1. user data on a NoCloud `cidata` ISO (CD-ROM), hostname from its meta-data: a client;
#   2. user data in QEMU's fw_cfg (`opt/nomados/user-data`) with an extra fragment: a server;
#   3. a broken user data in fw_cfg: refused with its line and column, the baked config used.
# Each console must show which source answered and that Nomad was started with (and
# loaded) the rendered fragment.
# Environment: NOMAD_INIT_BIN, NOMAD_DOUBLE_BIN (default: debug builds made here).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
for t in cpio xorriso ldd strip; do
    command -v "$t" >/dev/null || skip "$t not installed"
done
begin_boot_test

pid1_binaries

pid1_root "$TEST_TMP/root"
pack_initramfs "$TEST_TMP/root" "$TEST_TMP/initramfs.cpio"

# boot NAME EXTRA_QEMU_ARGS: boots the image; the console goes to $TEST_TMP/NAME.log.
boot() {
    local name=$1
    shift
    QEMU_EXTRA_ARGS="$*" start_vm "$TEST_TMP/$name.log" "$REPO/qemu/run-kernel.sh" \
        "$kernel" "$TEST_TMP/initramfs.cpio"
}

# expect LOG TEXT...: each fixed string is on the console.
expect() {
    local log=$1 s
    shift
    for s in "$@"; do
        grep -qF -- "$s" "$log" || fail_log "$log" "no '$s' on the console"
    done
}

# --- 1. NoCloud cidata ISO --------------------------------------------------------------
mkdir "$TEST_TMP/seed"
cat >"$TEST_TMP/seed/user-data" <<'EOF'
# NomadOS user data: a client of the cluster
[nomad]
role = "client"
datacenter = "dc-cidata"
retry_join = ["10.0.2.2"]
[nomad.meta]
rack = "r1"
EOF
printf 'instance-id: iid-cidata-1\nlocal-hostname: mc-cidata\n' >"$TEST_TMP/seed/meta-data"
xorriso -as mkisofs -quiet -J -r -V cidata -o "$TEST_TMP/seed.iso" "$TEST_TMP/seed" \
    2>"$TEST_TMP/xorriso.log" || fail "xorriso: $(cat "$TEST_TMP/xorriso.log")"
boot cidata -drive "file=$TEST_TMP/seed.iso,media=cdrom,readonly=on"
log=$TEST_TMP/cidata.log
wait_for "$log" 'nomad API healthy' 120
expect "$log" \
    "machine config: nocloud drive on /dev/sr0 (iso9660)" \
    "nocloud answered: user data (" \
    "facts instance_id=iid-cidata-1 hostname=mc-cidata" \
    "machine config from nocloud: applied; provides role client; retry_join (1)" \
    "hostname set to mc-cidata" \
    "agent -config=/run/nomados/machine/agent.json -config=/run/nomados/machine/nomad.d (pid" \
    "Loaded configuration from /run/nomados/machine/nomad.d/10-nomados-machine.json" \
    "Client: true" "Server: false" "(DC: dc-cidata)"
note "cidata: $(grep -m1 -o 'nocloud answered.*' "$log" | tr -d '\r')"
kill_vm

# --- 2. fw_cfg --------------------------------------------------------------------------
cat >"$TEST_TMP/fw-user-data.toml" <<'EOF'
[nomad]
role = "server"
bootstrap_expect = 1
datacenter = "dc-fwcfg"

[[fragments]]
name = "region.json"
content = '{"region": "r-fwcfg"}'
EOF
boot fwcfg -fw_cfg "name=opt/nomados/user-data,file=$TEST_TMP/fw-user-data.toml"
log=$TEST_TMP/fwcfg.log
wait_for "$log" 'nomad API healthy' 120
expect "$log" \
    "fw_cfg answered: user data (" \
    "machine config from fw_cfg: applied; provides role server; bootstrap_expect 1; fragments [region.json]" \
    "agent -config=/run/nomados/machine/agent.json -config=/run/nomados/machine/nomad.d (pid" \
    "Loaded configuration from /run/nomados/machine/nomad.d/10-nomados-machine.json" \
    "Loaded configuration from /run/nomados/machine/nomad.d/50-region.json" \
    "Client: false" "Server: true" "Region: r-fwcfg (DC: dc-fwcfg)"
note "fw_cfg: $(grep -m1 -o 'machine config from fw_cfg.*' "$log" | tr -d '\r')"
kill_vm

# --- 3. a broken user data leaves the baked configuration whole -------------------------
printf '[nomad]\nrole = "server"\nbootstrap_expect = 0\n[secrets]\nnomad_token = "s3cr3t tok3n"\n' \
    >"$TEST_TMP/broken.toml"
boot broken -fw_cfg "name=opt/nomados/user-data,file=$TEST_TMP/broken.toml"
log=$TEST_TMP/broken.log
wait_for "$log" 'nomad API healthy' 120
expect "$log" \
    "fw_cfg:user-data:3:20: nomad.bootstrap_expect must be between 1 and 255" \
    "fw_cfg:user-data:5:15: secrets.nomad_token must be one word without spaces (value not shown)" \
    "machine config from fw_cfg: refused; the baked configuration stays" \
    "agent -config=/etc/nomad.d/init.json (pid" \
    "Client: true" "Server: true"
grep -q 's3cr3t' "$log" && fail_log "$log" "a secret reached the console"
grep -q 'Loaded configuration from /run/nomados' "$log" &&
    fail_log "$log" "Nomad loaded a fragment of a refused user data"
note "broken: refused, baked configuration used"
