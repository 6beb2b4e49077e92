#!/usr/bin/env bash
# Build NomadOS disk images: root filesystem + bootable GPT disk (BIOS and UEFI) + cloud
# formats, without root and without loop devices. See docs/image.md.
#
#   ./buildimg.sh                         everything into out/
#   NOMAD_BIN=none FORMATS=qcow2 ./buildimg.sh
#
# Environment:
#   KERNEL      bzImage to use (default: the path printed by kernel-config/build.sh)
#   NOMAD_BIN   path of a nomad binary to use, `none` for an image without Nomad, or `double`
#               for the Nomad API test double (to try the boot flow offline; never ship it)
#               (default: download the pinned release below and verify its SHA-256)
#   PACKS       pack set directory (default: packs/ if present)
#   INIT_JSON   Nomad agent config (default: config/init.json if present)
#   TOOLBOX     1 (default) = busybox + applet links; 0 = none.  BUSYBOX=path picks the binary
#   OUT         output directory (default: out/)
#   FORMATS     all (default: every disk format + pxe) or a comma list of
#               raw,qcow2,vmdk,vhd,gcp,pxe,iso (iso: hybrid BIOS/UEFI ISO, see docs/install.md)
#   INIT_BIN    prebuilt static nomad-init (default: built here with crt-static)
#   TEST_INIT   script to run as PID 1 instead of nomad-init (boot tests; needs TOOLBOX=1)
#   SEED        seed for reproducible disk GUIDs (default: random)
#   ROOT_RO     1 = mount the root filesystem read-only (default 0)
#   DATA_MIB    initial data partition size (default 64; PID 1 grows it on first boot)
#   SLOT_MIB    minimum size of each system slot (default 512; at least twice the root fs)
#   KERNEL_ARGS extra kernel arguments, space separated
set -euo pipefail

# Pinned Nomad release. The hash is the official linux_amd64 zip's SHA-256 (the same value
# HashiCorp's SHA256SUMS and their Homebrew tap formula carry for 1.9.7).
NOMAD_VERSION=1.9.7
NOMAD_SHA256=e9c7337893eceb549557ef9ad341b3ae64f5f43e29ff1fb167b70cfd16748d2d

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$ROOT/out}
FORMATS=${FORMATS:-all}
TOOLBOX=${TOOLBOX:-1}
CACHE=${NOMADOS_CACHE:-$HOME/.cache/nomados}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

stage() { printf '==> [%4ss] %s\n' "$SECONDS" "$*"; }
die() { printf 'buildimg: error: %s\n' "$*" >&2; exit 1; }
# ldd exits 1 for static binaries, so look at its words rather than its status.
is_static() { local o; o=$(LC_ALL=C ldd "$1" 2>&1 || true); grep -qE 'not a dynamic executable|statically linked' <<<"$o"; }

# --- kernel ---------------------------------------------------------------------------------
if [ -n "${KERNEL:-}" ]; then
    [ -f "$KERNEL" ] || die "KERNEL=$KERNEL: no such file"
    kernel=$KERNEL
    stage "kernel: $kernel (KERNEL)"
else
    [ -x "$ROOT/kernel-config/build.sh" ] ||
        die "kernel-config/build.sh not found; set KERNEL=/path/to/bzImage"
    stage "kernel: kernel-config/build.sh (cached builds return at once)"
    kernel=$("$ROOT/kernel-config/build.sh") || die "kernel build failed (see above)"
    [ -f "$kernel" ] || die "kernel-config/build.sh printed '$kernel', which is not a file"
fi

# --- PID 1 ----------------------------------------------------------------------------------
init_args=()
if [ -n "${TEST_INIT:-}" ]; then
    [ -f "$TEST_INIT" ] || die "TEST_INIT=$TEST_INIT: no such file"
    [ "$TOOLBOX" = 1 ] || die "TEST_INIT needs TOOLBOX=1 (the script runs under busybox sh)"
    init_args=(--test-init "$TEST_INIT")
    stage "PID 1: test script $TEST_INIT"
else
    if [ -n "${INIT_BIN:-}" ]; then
        init_bin=$INIT_BIN
    else
        stage "PID 1: building static nomad-init (release, crt-static)"
        init_bin=$("$ROOT/tools/build-init.sh") || die "building nomad-init failed"
    fi
    [ -f "$init_bin" ] || die "nomad-init binary $init_bin not found"
    is_static "$init_bin" ||
        die "$init_bin is dynamically linked; PID 1 must be static (ldd: $(ldd "$init_bin" 2>&1 | head -1))"
    init_args=(--init "$init_bin")
fi

# --- Nomad ----------------------------------------------------------------------------------
nomad_args=()
case "${NOMAD_BIN:-}" in
    none)
        stage "nomad: none (NOMAD_BIN=none)"
        ;;
    double)
        # The in-memory Nomad API test double: shows the boot flow where Nomad cannot be
        # downloaded. It runs no jobs; never ship such an image.
        stage "nomad: the Nomad API TEST DOUBLE (NOMAD_BIN=double), for trying the boot flow only"
        (cd "$ROOT" && cargo build --release -q -p nomad-double) || die "building nomad-double failed"
        nomad_args=(--nomad "$CARGO_TARGET_DIR/release/nomad-double")
        ;;
    "")
        nomad_cached=$CACHE/nomad/$NOMAD_VERSION/nomad
        if [ ! -x "$nomad_cached" ]; then
            url=https://releases.hashicorp.com/nomad/$NOMAD_VERSION/nomad_${NOMAD_VERSION}_linux_amd64.zip
            stage "nomad: downloading $url"
            mkdir -p "$(dirname "$nomad_cached")"
            tmp=$(mktemp -d)
            trap 'rm -rf "$tmp"' EXIT
            curl -fL --progress-bar --retry 3 --connect-timeout 20 -o "$tmp/nomad.zip" "$url" ||
                die "cannot download $url; set NOMAD_BIN=/path/to/nomad, NOMAD_BIN=none (no Nomad), or NOMAD_BIN=double (the API test double, to try the boot flow)"
            got=$(sha256sum "$tmp/nomad.zip" | cut -d' ' -f1)
            [ "$got" = "$NOMAD_SHA256" ] ||
                die "nomad_${NOMAD_VERSION}_linux_amd64.zip: computed sha256 $got, expected $NOMAD_SHA256; refusing it"
            unzip -p "$tmp/nomad.zip" nomad >"$tmp/nomad" || die "nomad.zip has no 'nomad' member"
            chmod 0755 "$tmp/nomad"
            mv "$tmp/nomad" "$nomad_cached"
        fi
        nomad_args=(--nomad "$nomad_cached")
        stage "nomad: $NOMAD_VERSION ($nomad_cached, sha256-verified zip)"
        ;;
    *)
        [ -f "$NOMAD_BIN" ] || die "NOMAD_BIN=$NOMAD_BIN: no such file (or use NOMAD_BIN=none)"
        nomad_args=(--nomad "$NOMAD_BIN")
        stage "nomad: $NOMAD_BIN (NOMAD_BIN)"
        ;;
esac

# --- configuration and packs ----------------------------------------------------------------
cfg_args=()
packs=${PACKS:-$ROOT/packs}
if [ -d "$packs" ]; then
    cfg_args+=(--packs "$packs")
elif [ -n "${PACKS:-}" ]; then
    die "PACKS=$PACKS: no such directory"
else
    stage "packs: $packs not present, image has no default pack set"
fi
init_json=${INIT_JSON:-$ROOT/config/init.json}
if [ -f "$init_json" ]; then
    cfg_args+=(--init-json "$init_json")
elif [ -n "${INIT_JSON:-}" ]; then
    die "INIT_JSON=$INIT_JSON: no such file"
else
    stage "init.json: $init_json not present, image has no /etc/nomad.d/init.json"
fi
[ -f "$ROOT/config/nomados.toml" ] && cfg_args+=(--nomados-toml "$ROOT/config/nomados.toml")

if [ "$TOOLBOX" = 1 ]; then
    busybox=${BUSYBOX:-$(command -v busybox || true)}
    [ -n "$busybox" ] && [ -f "$busybox" ] || die "TOOLBOX=1 but no busybox (apt-get install busybox-static, or TOOLBOX=0)"
    is_static "$busybox" || die "$busybox is not static (apt-get install busybox-static)"
    cfg_args+=(--toolbox "$busybox")
fi

# --- image ----------------------------------------------------------------------------------
stage "building nomados-image"
(cd "$ROOT" && cargo build --release -q -p nomados-image) || die "building nomados-image failed"
tool=$CARGO_TARGET_DIR/release/nomados-image

# PXE artifacts are the same root filesystem as an initramfs; the disk tool builds the rest.
want_pxe=0
disk_formats=$FORMATS
if [ "$FORMATS" = all ]; then
    want_pxe=1
elif [[ ",$FORMATS," == *,pxe,* ]]; then
    want_pxe=1
    disk_formats=$(tr ',' '\n' <<<"$FORMATS" | grep -vx pxe | paste -sd, -)
fi
# The ISO (image/iso.sh) wraps the PXE kernel + initramfs and carries the raw disk image.
want_iso=0
# Not part of `all`: compressing the disk image costs most of a build's time.
if [[ ",$FORMATS," == *,iso,* ]]; then
    want_iso=1
    want_pxe=1
    disk_formats=$(tr ',' '\n' <<<"$disk_formats" | grep -vx iso | paste -sd, -)
    [ "$disk_formats" = all ] || [[ ",$disk_formats," == *,raw,* ]] ||
        disk_formats=${disk_formats:+$disk_formats,}raw
fi
build_args=(build --kernel "$kernel" --out "$OUT" --formats "$disk_formats"
    --data-mib "${DATA_MIB:-64}" --slot-mib "${SLOT_MIB:-512}")
[ -n "${SEED:-}" ] && build_args+=(--seed "$SEED")
[ "${ROOT_RO:-0}" = 1 ] && build_args+=(--root-ro)
for a in ${KERNEL_ARGS:-}; do build_args+=(--kernel-arg "$a"); done

# Without root, fakeroot makes the image's files belong to root:root, not to the builder.
wrap=()
if [ "$(id -u)" != 0 ]; then
    if command -v fakeroot >/dev/null; then
        wrap=(fakeroot)
    else
        printf 'buildimg: warning: not root and no fakeroot: files in the image will belong to uid %s\n' "$(id -u)" >&2
    fi
fi
if [ -n "$disk_formats" ]; then
    "${wrap[@]}" "$tool" "${build_args[@]}" "${init_args[@]}" "${nomad_args[@]}" "${cfg_args[@]}"
    # A shipped image carries no node identity, Raft state or ACL token (issue 9).
    stage "checking that the data partition is an empty ext4"
    rc=0; "$ROOT/image/check-data-empty.sh" "$OUT/nomados.raw" || rc=$?
    [ $rc = 0 ] || [ $rc = 77 ] || die "the data partition of $OUT/nomados.raw is not empty"
fi
if [ "$want_pxe" = 1 ]; then
    stage "pxe: kernel + initramfs + pxelinux/iPXE config into $OUT/pxe"
    staging=$OUT/.pxe-rootfs
    rm -rf "$staging"
    "${wrap[@]}" "$tool" rootfs --staging "$staging" "${init_args[@]}" "${nomad_args[@]}" "${cfg_args[@]}" >/dev/null ||
        die "staging the PXE root filesystem failed"
    "$ROOT/image/pxe.sh" "$staging" "$kernel" "$OUT/pxe" || die "image/pxe.sh failed"
    rm -rf "$staging"
fi
if [ "$want_iso" = 1 ]; then
    stage "iso: hybrid BIOS/UEFI ISO with the PXE kernel + initramfs and the xz disk image"
    "$ROOT/image/iso.sh" "$OUT/pxe" "$OUT/nomados.raw" "$OUT/nomados.iso" || die "image/iso.sh failed"
fi
stage "done"
