#!/bin/sh
# Builds the static nomad-init (release) and prints its path; cargo's output goes to stderr.
# The one place its link flags live (buildimg.sh and init/benches/pid1_figures.sh call this):
#   -C target-feature=+crt-static       glibc linked in: PID 1 runs before any library can
#                                        load (the musl target cannot be installed here)
#   -Wl,-z,pack-relative-relocs          RELR: the static PIE's ~17 000 relative relocations
#                                        take 5 KB instead of 411 KB (binutils >= 2.38 and
#                                        glibc >= 2.36, both in Debian 12), so PID 1 keeps
#                                        its address randomization inside the size target
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
triple=x86_64-unknown-linux-gnu
flags='-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs'
echo "building: RUSTFLAGS='$flags' cargo build --release --target $triple -p nomad-init" >&2
(cd "$root" && RUSTFLAGS=$flags cargo build --release --target "$triple" -p nomad-init >&2)
echo "${CARGO_TARGET_DIR:-$root/target}/$triple/release/nomad-init"
