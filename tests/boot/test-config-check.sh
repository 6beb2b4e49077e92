#!/usr/bin/env bash
# kernel-config/check.sh catches fragments that Kconfig silently did not honour, and names
# the fragment and line. Also checks that the real fragments parse. No QEMU needed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
check=$REPO/kernel-config/check.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$tmp/final.config" <<'CFG'
CONFIG_A=y
CONFIG_B=y
# CONFIG_C is not set
CONFIG_D="text"
CONFIG_E=16
CFG
cat >"$tmp/one.config" <<'CFG'
# comment
CONFIG_A=y
CONFIG_B=n
CONFIG_D="text"

CONFIG_MISSING=y
CFG
cat >"$tmp/two.config" <<'CFG'
# CONFIG_B is not set
# CONFIG_C is not set
# CONFIG_ABSENT is not set
CONFIG_E=32
CFG

# Passing case: every request holds, including "is not set" for a symbol the .config lacks.
printf 'CONFIG_A=y\n# CONFIG_C is not set\n# CONFIG_ABSENT is not set\nCONFIG_D="text"\nCONFIG_E=16\n' >"$tmp/ok.config"
"$check" "$tmp/final.config" "$tmp/ok.config" 2>"$tmp/ok.err" || { cat "$tmp/ok.err" >&2; fail "a satisfied fragment was rejected"; }
grep -q 'all 5 requested symbols' "$tmp/ok.err" || fail "unexpected success message: $(cat "$tmp/ok.err")"

# Failing case: B wanted off (last fragment wins) but y; MISSING absent; E 32 vs 16.
if "$check" "$tmp/final.config" "$tmp/one.config" "$tmp/two.config" 2>"$tmp/bad.err"; then
    fail "check.sh accepted fragments that do not hold"
fi
grep -q "two.config:1:1: CONFIG_B requested n, final .config has y" "$tmp/bad.err" || fail "B not reported at two.config:1: $(cat "$tmp/bad.err")"
grep -q "one.config:6:1: CONFIG_MISSING requested y, final .config has nothing" "$tmp/bad.err" || fail "MISSING not reported: $(cat "$tmp/bad.err")"
grep -q "two.config:4:1: CONFIG_E requested 32, final .config has 16" "$tmp/bad.err" || fail "E not reported: $(cat "$tmp/bad.err")"
grep -q "3 requested symbol(s) did not get their value" "$tmp/bad.err" || fail "wrong count: $(cat "$tmp/bad.err")"
grep -q "CONFIG_A\|CONFIG_C\|CONFIG_ABSENT\|CONFIG_D" "$tmp/bad.err" && fail "satisfied symbols reported: $(cat "$tmp/bad.err")"

# Garbage in a fragment is an error with its location.
printf 'CONFIG_A=y\nCONFIG_A y\n' >"$tmp/garbage.config"
if "$check" "$tmp/final.config" "$tmp/garbage.config" 2>"$tmp/garbage.err"; then
    fail "check.sh accepted an unparsable fragment line"
fi
grep -q "garbage.config:2:1: cannot parse fragment line: CONFIG_A y" "$tmp/garbage.err" || fail "parse error not located: $(cat "$tmp/garbage.err")"

# The real fragments contain only lines check.sh understands.
: >"$tmp/empty.config"
"$check" "$tmp/empty.config" "$REPO"/kernel-config/*.config 2>"$tmp/real.err" || true
grep -q 'cannot parse' "$tmp/real.err" && fail "real fragments have unparsable lines: $(grep 'cannot parse' "$tmp/real.err")"
echo "check.sh reports unmet requests with fragment:line" >&2
