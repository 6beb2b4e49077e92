#!/bin/sh
# PID 1 figures: size of the static, stripped nomad-init, and its resident memory as PID 1
# of a PID namespace once booted and supervising a (fake) Nomad.
#
#   init/benches/pid1_figures.sh            # builds the static release binary first
#   NOMAD_INIT=/path/to/nomad-init init/benches/pid1_figures.sh   # measure a given binary
#
# The memory figure needs root (unshare); without it only the size is printed.
set -eu

here=$(cd "$(dirname "$0")/../.." && pwd)

if [ -z "${NOMAD_INIT:-}" ]; then
    NOMAD_INIT=$("$here/tools/build-init.sh")
fi

bin=$NOMAD_INIT
# ldd says "statically linked" (newer glibc) or "not a dynamic executable" (older).
linkage=$(ldd "$bin" 2>&1 | tr -d '\t' | head -1)
case "$linkage" in
    *"statically linked"*|*"not a dynamic executable"*) ;;
    *) echo "FAIL: $bin is dynamically linked:" >&2; ldd "$bin" >&2; exit 1 ;;
esac
echo "static:        yes (ldd: $linkage)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/nomad-init"
strip "$work/nomad-init" 2>/dev/null || true
size=$(stat -c %s "$work/nomad-init")
echo "binary size:   $size bytes ($(( (size + 1023) / 1024 )) KiB, stripped)"

if [ "$(id -u)" != 0 ]; then
    echo "resident memory: SKIP (needs root for unshare)"
    exit 0
fi

mkdir -p "$work/root/etc/nomados"
cat > "$work/fake-nomad" <<'SH'
#!/bin/sh
echo ready
exec sleep 1000
SH
chmod +x "$work/fake-nomad"
cat > "$work/root/etc/nomados/nomados.toml" <<TOML
[nomad]
binary = "$work/fake-nomad"
config = "$work/init.json"
log_file = "$work/root/var/log/nomad.log"
[packs]
set = "$work/root/etc/nomados/packs"
cache_dir = "$work/root/var/cache"
interval_secs = 0
[data]
mount_point = "$work/root/var/lib/nomad"
TOML
echo '{}' > "$work/init.json"

NOMADOS_TEST_ROOT="$work/root" unshare --pid --fork --mount-proc --mount --uts --net \
    "$work/nomad-init" 2> "$work/console.log" &
ushare=$!
# Wait for the fake Nomad to be up (bounded), then let the health probe run a few times.
i=0
while ! grep -q "nomad: ready" "$work/console.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "FAIL: init did not boot" >&2; cat "$work/console.log" >&2; kill -9 $ushare; exit 1; }
    sleep 0.05
done
sleep 3
init=$(ps -o pid= --ppid $ushare | tr -d ' ')
rss=$(awk '/^VmRSS/ {print $2, $3}' /proc/"$init"/status)
hwm=$(awk '/^VmHWM/ {print $2, $3}' /proc/"$init"/status)
threads=$(awk '/^Threads/ {print $2}' /proc/"$init"/status)
echo "PID 1 VmRSS:   $rss (peak $hwm, $threads threads) after boot, supervising"
kill -TERM "$init"
wait $ushare 2>/dev/null || true
