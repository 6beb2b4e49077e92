#!/usr/bin/env bash
# Build the NomadOS kernel, or reuse a cached build with the same inputs.
#
#   kernel-config/build.sh            build (or reuse) and print the bzImage path on stdout
#   kernel-config/build.sh --check    only generate the .config and verify the fragments
#   kernel-config/build.sh --key      print the cache key and exit
#
# Progress goes to stderr; stdout carries only the bzImage path, so callers can do
#   kernel=$(kernel-config/build.sh)
#
# Environment:
#   NOMADOS_CACHE          cache root (default ~/.cache/nomados); builds live in $NOMADOS_CACHE/kernel
#   KERNEL_SOURCE          auto (default) | debian | tarball
#                          auto = Debian's linux-source-6.1 if installed, else the kernel.org tarball
#   KERNEL_TARBALL_URL     kernel.org tarball (default: pinned 6.1.x below)
#   KERNEL_TARBALL_SHA256  its sha256; required when KERNEL_TARBALL_URL is overridden
#   KERNEL_EXTRA_CONFIG    extra fragment(s), space separated, applied after ours
#   KERNEL_JOBS            make -j value (default: nproc)
#
# The cache key is the sha256 of: this script's BUILD_VERSION, the source identity (Debian
# package version or tarball sha256), the compiler version, and every fragment's name and
# contents. A build happens in a temporary directory and is renamed into place when complete,
# so an interrupted build never leaves a half-written cache entry.
set -euo pipefail

# Bump when a change to this script changes the kernel it produces.
BUILD_VERSION=1

DEFAULT_TARBALL_URL=https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.127.tar.xz
# From kernel.org sha256sums.asc (as recorded in buildroot linux/linux.hash).
DEFAULT_TARBALL_SHA256=18b0d41d1a7fbad56045cde0d7fc176bfb18361d29c9f07e57109bbf21bf7876
DEBIAN_TARBALL=/usr/src/linux-source-6.1.tar.xz
DEBIAN_PACKAGE=linux-source-6.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NOMADOS_CACHE:-$HOME/.cache/nomados}/kernel
jobs=${KERNEL_JOBS:-$(nproc)}

say() { printf 'kernel: %s\n' "$*" >&2; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }

mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    --key) mode=key ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

# Fragments in merge order: later files override earlier ones.
fragments=("$here/base.config" "$here/nomad.config" "$here/hardware.config")
for extra in ${KERNEL_EXTRA_CONFIG:-}; do
    [ -r "$extra" ] || die "KERNEL_EXTRA_CONFIG: cannot read '$extra'"
    fragments+=("$(cd "$(dirname "$extra")" && pwd)/$(basename "$extra")")
done

# --- source identity ------------------------------------------------------------------------
source_kind=${KERNEL_SOURCE:-auto}
if [ "$source_kind" = auto ]; then
    if [ -n "${KERNEL_TARBALL_URL:-}" ] || [ ! -r "$DEBIAN_TARBALL" ]; then
        source_kind=tarball
    else
        source_kind=debian
    fi
fi
case "$source_kind" in
    debian)
        [ -r "$DEBIAN_TARBALL" ] || die "$DEBIAN_TARBALL not found (apt-get install $DEBIAN_PACKAGE, or KERNEL_SOURCE=tarball)"
        if version=$(dpkg-query -W -f='${Version}' "$DEBIAN_PACKAGE" 2>/dev/null) && [ -n "$version" ]; then
            source_id="debian:$DEBIAN_PACKAGE:$version"
        else
            source_id="debian-file:$(sha256sum "$DEBIAN_TARBALL" | cut -d' ' -f1)"
        fi
        ;;
    tarball)
        if [ -n "${KERNEL_TARBALL_URL:-}" ]; then
            tarball_url=$KERNEL_TARBALL_URL
            tarball_sha=${KERNEL_TARBALL_SHA256:-}
            [ -n "$tarball_sha" ] || die "KERNEL_TARBALL_URL is set but KERNEL_TARBALL_SHA256 is not; refusing an unverified source"
        else
            tarball_url=$DEFAULT_TARBALL_URL
            tarball_sha=${KERNEL_TARBALL_SHA256:-$DEFAULT_TARBALL_SHA256}
        fi
        [[ "$tarball_sha" =~ ^[0-9a-f]{64}$ ]] || die "KERNEL_TARBALL_SHA256 must be 64 lowercase hex digits, got '$tarball_sha'"
        source_id="tarball:$tarball_sha"
        ;;
    *) die "KERNEL_SOURCE must be auto, debian or tarball, got '$source_kind'" ;;
esac

cc_version=$(${CC:-gcc} --version 2>/dev/null | head -n1 || echo unknown)

key=$(
    {
        printf 'nomados-kernel-build %s\n' "$BUILD_VERSION"
        printf 'source %s\n' "$source_id"
        printf 'cc %s\n' "$cc_version"
        for f in "${fragments[@]}"; do
            printf 'fragment %s %s\n' "$(basename "$f")" "$(wc -c <"$f")"
            cat "$f"
        done
    } | sha256sum | cut -d' ' -f1
)
if [ "$mode" = key ]; then
    echo "$key"
    exit 0
fi

result="$cache/$key/bzImage"
if [ "$mode" = build ] && [ -f "$result" ]; then
    say "cached: $result"
    echo "$result"
    exit 0
fi

mkdir -p "$cache"
# One build at a time per cache: a second caller waits, then finds the cached result.
exec 9>"$cache/.lock"
if ! flock -n 9; then
    say "another build holds $cache/.lock; waiting"
    flock 9
fi
if [ "$mode" = build ] && [ -f "$result" ]; then
    say "cached: $result"
    echo "$result"
    exit 0
fi

work=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- unpacked source, cached per source identity ---------------------------------------------
src="$cache/src/$(printf '%s' "$source_id" | sha256sum | cut -c1-16)"
if [ ! -f "$src/Makefile" ]; then
    mkdir -p "$cache/src" "$cache/dl"
    case "$source_kind" in
        debian) archive=$DEBIAN_TARBALL ;;
        tarball)
            archive="$cache/dl/$tarball_sha.tar.xz"
            if [ ! -f "$archive" ]; then
                say "downloading $tarball_url"
                curl -fL --retry 3 --progress-bar -o "$work/download" "$tarball_url" || die "download failed: $tarball_url"
                got=$(sha256sum "$work/download" | cut -d' ' -f1)
                [ "$got" = "$tarball_sha" ] || die "sha256 mismatch for $tarball_url: computed $got, expected $tarball_sha"
                mv -f "$work/download" "$archive"
            else
                got=$(sha256sum "$archive" | cut -d' ' -f1)
                [ "$got" = "$tarball_sha" ] || die "cached $archive is corrupt: computed $got, expected $tarball_sha (delete it)"
            fi
            ;;
    esac
    say "unpacking $(basename "$archive") ($source_id)"
    mkdir "$work/src"
    tar -xf "$archive" -C "$work/src" --strip-components=1 || die "cannot unpack $archive"
    [ -f "$work/src/Makefile" ] || die "$archive does not look like a kernel source tree"
    rm -rf "$src"
    mv -T "$work/src" "$src"
fi

# --- configuration ---------------------------------------------------------------------------
obj="$work/obj"
mkdir -p "$obj"
kvm_guest="$src/kernel/configs/kvm_guest.config"
[ -f "$kvm_guest" ] || die "$kvm_guest missing from the kernel source"
say "configuring: allnoconfig + kvm_guest.config + $(for f in "${fragments[@]}"; do printf '%s ' "$(basename "$f")"; done)"
# -n: allnoconfig with the merged fragments as KCONFIG_ALLCONFIG, so every symbol we did not
# ask for stays off (olddefconfig would turn on defaults, and "m" defaults become "y" without
# modules).
(cd "$src" && ./scripts/kconfig/merge_config.sh -n -O "$obj" "$kvm_guest" "${fragments[@]}") \
    >"$work/config.log" 2>&1 || { tail -n 30 "$work/config.log" >&2; die "kernel configuration failed"; }
"$here/check.sh" --platforms "$obj/.config" "${fragments[@]}" || die "config fragments do not hold in the final .config (see above)"

if [ "$mode" = check ]; then
    cp "$obj/.config" "$work/../.last-check.config"
    say "config written to $cache/.last-check.config"
    exit 0
fi

# --- build -----------------------------------------------------------------------------------
say "building bzImage with make -j$jobs (log: $cache/$key/build.log once done)"
start=$(date +%s)
# Summarise make's output: one line per 200 objects plus the final link steps. The full log is
# kept next to the result.
set +e
make -C "$src" O="$obj" -j"$jobs" bzImage 2>&1 | tee "$work/build.log" | awk '
    /^  CC / { n++; if (n % 200 == 0) { printf "kernel:   %d objects compiled\n", n; fflush() } }
    /^  LD      vmlinux$|^  BUILD   arch\/x86\/boot\/bzImage$/ { printf "kernel:   %s\n", $0; fflush() }
' >&2
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    grep -E 'error|Error' "$work/build.log" | head -n 20 >&2 || true
    tail -n 20 "$work/build.log" >&2
    die "make bzImage failed (exit $status)"
fi
elapsed=$(( $(date +%s) - start ))
# CPU seconds of all children (make, cc1, ...): comparable across loaded and idle machines.
# `times` must run in this shell: inside $(...) it would report the subshell's children.
times >"$work/times"
cpu=$(awk 'NR == 2 { print $1 " user " $2 " sys" }' "$work/times")

out="$work/out"
mkdir "$out"
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage"
cp "$obj/.config" "$out/config"
cp "$work/build.log" "$out/build.log"
printf 'source=%s\nbuild_seconds=%s\nbuild_cpu=%s\njobs=%s\nbuilt=%s\n' \
    "$source_id" "$elapsed" "$cpu" "$jobs" "$(date -u +%FT%TZ)" >"$out/info"
rm -rf "${cache:?}/${key:?}"
mv -T "$out" "$cache/$key"
say "built in ${elapsed}s (cpu: $cpu), $(stat -c %s "$result") bytes: $result"
echo "$result"
