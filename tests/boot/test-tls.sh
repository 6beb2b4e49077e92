#!/usr/bin/env bash
# TLS on (issue 9), with nomad-init as the real PID 1 of a kernel + initramfs guest and the
# nomad-double as Nomad (serving HTTPS from its agent config's `tls` block, as Nomad does).
# A CA and a node certificate are made here with openssl and passed in QEMU's fw_cfg user
# data (`[secrets.tls]`). The console must show Nomad healthy over https, the ACL bootstrap,
# the default pack set applied and, after an ACPI power button press, the node's drain asked
# with the token and a clean power-off. From the host, the API answers over the forwarded
# port to `curl --cacert` (with the token), refuses a client trusting another CA, and does
# not answer plain http. No key material and no token in a log line on the console.
# Environment: NOMAD_INIT_BIN, NOMAD_DOUBLE_BIN (default: debug builds made here).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
require_tools
for t in cpio ldd strip openssl curl; do
    command -v "$t" >/dev/null || skip "$t not installed"
done
begin_boot_test

pid1_binaries

# --- the PKI, as docs/security.md says to make it ---------------------------------------
pki=$TEST_TMP/pki
mkdir -m 0700 "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=NomadOS test CA" -keyout ca-key.pem -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=server.global.nomad" -keyout node-key.pem -out node.csr
    printf '%s\n' \
        'subjectAltName = DNS:server.global.nomad, DNS:localhost, IP:127.0.0.1' \
        'extendedKeyUsage = serverAuth, clientAuth' \
        'basicConstraints = CA:FALSE' >node.ext
    openssl x509 -req -in node.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 \
        -extfile node.ext -out node.pem
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=someone else's CA" -keyout wrong-ca-key.pem -out wrong-ca.pem
) >"$TEST_TMP/openssl.log" 2>&1 || fail "openssl: $(cat "$TEST_TMP/openssl.log")"

{
    echo '# NomadOS user data: the baked agent (server + client, ACLs on), with TLS'
    echo '[secrets.tls]'
    printf 'ca = """\n%s"""\n' "$(cat "$pki/ca.pem")"
    printf 'cert = """\n%s"""\n' "$(cat "$pki/node.pem")"
    printf 'key = """\n%s"""\n' "$(cat "$pki/node-key.pem")"
} >"$TEST_TMP/user-data.toml"

# --- the initramfs: nomad-init as /init, the double as nomad, the default pack set ------
root=$TEST_TMP/root
pid1_root "$root"
mkdir -p "$root/sbin"
cp -r "$REPO/packs" "$root/etc/nomados/packs"
# The default pack's raw_exec task runs /sbin/nomad-init (the double checks that it exists);
# there is no shell in this root at all, as in a TOOLBOX=0 image.
ln -s ../init "$root/sbin/nomad-init"
pack_initramfs "$root" "$TEST_TMP/initramfs.cpio"

# --- the boot ---------------------------------------------------------------------------
log=$TEST_TMP/console.log
NOMAD_PORT=$(free_port)
export NOMAD_PORT
QMP_SOCK=$TEST_TMP/qmp.sock QEMU_EXTRA_ARGS="-fw_cfg name=opt/nomados/user-data,file=$TEST_TMP/user-data.toml" \
    start_vm "$log" "$REPO/qemu/run-kernel.sh" "$kernel" "$TEST_TMP/initramfs.cpio"
wait_for "$log" 'nomad API healthy at ' 180
grep -qF 'nomad API healthy at https://127.0.0.1:4646' "$log" ||
    fail_log "$log" "PID 1 did not reach Nomad over https"
wait_for "$log" 'packs: Apply: [0-9]+ created, [0-9]+ updated, [0-9]+ unchanged, [0-9]+ deleted, [0-9]+ failed' 120
grep -qE 'packs: Apply: [0-9]+ created, [0-9]+ updated, [0-9]+ unchanged, [0-9]+ deleted, 0 failed' "$log" ||
    fail_log "$log" "the pack set did not apply cleanly over https"
for want in 'fw_cfg answered: user data (' 'machine config from fw_cfg: applied' \
    'Loaded configuration from /run/nomados/machine/nomad.d/10-nomados-machine.json' \
    'TLS: HTTPS' 'nomad ACLs bootstrapped: management token accessor'; do
    grep -qF -- "$want" "$log" || fail_log "$log" "no '$want' on the console"
done
token=$(tr -d '\r' <"$log" | grep -oE 'Secret ID: +[0-9a-f-]{36}' | head -1 | awk '{print $3}')
[ -n "$token" ] || fail_log "$log" "no ACL bootstrap token on the console"

# The host's view over the forwarded port: the certificate names 127.0.0.1 and
# server.global.nomad; only the CA of the user data is trusted.
api=https://127.0.0.1:$NOMAD_PORT
curl_time=$((10 * ${TIMEOUT_SCALE:-1}))
job=$(curl -fsS --max-time "$curl_time" --cacert "$pki/ca.pem" -H "X-Nomad-Token: $token" "$api/v1/job/hello") ||
    fail "GET $api/v1/job/hello with --cacert and the token failed"
JOB=$job python3 -c 'import json,os,sys; m=json.loads(os.environ["JOB"]).get("Meta") or {}; sys.exit(0 if m.get("nomados.owner") else f"no nomados.owner meta: {m}")' ||
    fail "job hello is not the applier's"
curl -fsS --max-time "$curl_time" --cacert "$pki/ca.pem" -H "X-Nomad-Token: $token" \
    --resolve "server.global.nomad:$NOMAD_PORT:127.0.0.1" \
    "https://server.global.nomad:$NOMAD_PORT/v1/agent/health" >/dev/null ||
    fail "the API did not answer as server.global.nomad"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$curl_time" --cacert "$pki/ca.pem" "$api/v1/jobs" || true)
[ "$code" = 403 ] || fail "GET /v1/jobs without a token over https answered $code, not 403"
if curl -sS -o /dev/null --max-time "$curl_time" --cacert "$pki/wrong-ca.pem" "$api/v1/agent/health" 2>"$TEST_TMP/wrong.err"; then
    fail "a client trusting another CA was answered"
fi
grep -qi 'certificate' "$TEST_TMP/wrong.err" || fail "wrong CA: $(cat "$TEST_TMP/wrong.err")"
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$curl_time" "http://127.0.0.1:$NOMAD_PORT/v1/agent/health" 2>/dev/null || true)
case $code in 2??) fail "plain http answered $code: TLS is not enforced" ;; esac
note "host: $api/v1/job/hello answered with --cacert; another CA refused; plain http answered '$code'"

# --- the power-off ----------------------------------------------------------------------
python3 "$REPO/qemu/qmp.py" --wait 5 "$TEST_TMP/qmp.sock" system_powerdown >/dev/null ||
    fail "QMP system_powerdown failed"
start=$SECONDS
wait_exit $((60 * ${TIMEOUT_SCALE:-1})) || fail_log "$log" "QEMU still running after system_powerdown"
# The drain asks Nomad over https with the token: anonymous or over http it would be
# "nomad API unavailable".
for want in 'Poweroff requested: shutting down' 'not draining: no other node could take|drained node' \
    'nomad stopped with' 'reboot: Power down'; do
    grep -qE -- "$want" "$log" || fail_log "$log" "shutdown: '$want' missing from the console"
done
note "powered off $((SECONDS - start)) s after system_powerdown"

# --- nothing secret on the console ------------------------------------------------------
grep -q 'PRIVATE KEY' "$log" && fail "a private key's PEM header reached the console"
while read -r line; do
    case $line in -----*) continue ;; esac
    [ ${#line} -ge 16 ] || continue
    grep -qF -- "$line" "$log" && fail "key material reached the console"
done <"$pki/node-key.pem"
[ "$(tr -d '\r' <"$log" | grep -cF "$token")" = 1 ] ||
    fail_log "$log" "the token is on the console more than once (the first-boot banner)"
note "no key material on the console; the token only in the first-boot banner"
