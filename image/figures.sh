#!/usr/bin/env bash
# Prints image-size and build-time figures (a benchmark, not a test):
#   1. sizes per output format without Nomad (NOMAD_BIN=none)
#   2. the same with Nomad (NOMAD_BIN=path, or the cached pinned download), if available
#   3. wall time of an incremental rebuild with the kernel and cargo outputs already cached
#
# Uses the same environment as buildimg.sh (KERNEL, INIT_BIN, TEST_INIT, PACKS...). Without
# KERNEL it uses kernel-config/build.sh, which builds the kernel first if it is not cached.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/nomados-figures.XXXXXX)
trap 'rm -rf "$work"' EXIT

sizes() { # manifest.json -> one line per image
    python3 - "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
h = lambda b: f"{b/1048576:8.1f} MiB"
print(f"  rootfs content {h(m['rootfs_bytes'])}   kernel {h(m['kernel']['bytes'])}")
for p in m['disk']['partitions']:
    size = (p['last_lba'] + 1 - p['first_lba']) * 512
    print(f"  partition {p['name']:<14} {h(size)}")
for i in m['images']:
    print(f"  {i['format']:<6} {i['file']:<16} size {h(i['bytes'])}   allocated {h(i['allocated_bytes'])}")
EOF
}

build() { # name, extra env...
    local name=$1
    shift
    local start=$SECONDS
    if ! env "$@" OUT="$work/$name" "$ROOT/buildimg.sh" >"$work/$name.log" 2>&1; then
        echo "  build failed; last lines:"
        tail -n 15 "$work/$name.log" | sed 's/^/    /'
        return 1
    fi
    echo "  build wall time: $((SECONDS - start)) s"
}

echo "== without Nomad (NOMAD_BIN=none, FORMATS=all)"
build none NOMAD_BIN=none FORMATS=all && sizes "$work/none/manifest.json"

nomad=${NOMAD_BIN:-}
if [ -z "$nomad" ]; then
    v=$(sed -n 's/^NOMAD_VERSION=//p' "$ROOT/buildimg.sh")
    cached=${NOMADOS_CACHE:-$HOME/.cache/nomados}/nomad/$v/nomad
    [ -x "$cached" ] && nomad=$cached
fi
echo "== with Nomad"
if [ -n "$nomad" ] && [ "$nomad" != none ]; then
    build nomad NOMAD_BIN="$nomad" FORMATS=all && sizes "$work/nomad/manifest.json"
else
    echo "  skipped: no Nomad binary (set NOMAD_BIN=/path/to/nomad; the pinned download is not cached)"
fi

echo "== incremental rebuild (kernel + cargo cached), NOMAD_BIN=none"
build again NOMAD_BIN=none FORMATS=all
echo "   same, FORMATS=qcow2 (what make run needs)"
build again-qcow2 NOMAD_BIN=none FORMATS=qcow2
