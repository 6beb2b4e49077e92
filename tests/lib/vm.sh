# shellcheck shell=bash
# What every QEMU test needs once a VM runs in the background (VM_PID) with its serial
# console in a file: waiting for console lines, reading how QEMU ended, stopping it, and
# failing with the reason first and the console's last lines after (CI shows only part of
# long output). Sourced by tests/boot/lib.sh and tests/e2e/lib.sh.
# Contract of a test: exit 0 = pass, 77 = skip (reason on stderr), anything else = fail.

# Tests boot scratch copies and some need one disk across boots (the reboot test): in place,
# unless a test asks for the users' default (the e2e BIOS boot checks the overlay).
export DISK_MODE=${DISK_MODE:-in-place}

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "  $*" >&2; }

# The kernel: $KERNEL, else kernel-config's cache entry for the current config, else any
# cached build. Never builds one (that takes an hour on 2 cores): skip instead.
cached_kernel() {
    if [ -n "${KERNEL:-}" ]; then
        [ -f "$KERNEL" ] || skip "KERNEL=$KERNEL does not exist"
        echo "$KERNEL"
        return
    fi
    local cache=${NOMADOS_CACHE:-$HOME/.cache/nomados}/kernel key k=
    if key=$("$REPO/kernel-config/build.sh" --key 2>/dev/null) && [ -f "$cache/$key/bzImage" ]; then
        k=$cache/$key/bzImage
    else
        k=$(ls -t "$cache"/*/bzImage 2>/dev/null | head -1 || true)
        [ -z "$k" ] || echo "no kernel cached for this config (key ${key:-?}); using the newest cached build" >&2
    fi
    [ -n "$k" ] || skip "no cached kernel in $cache/*/bzImage (run kernel-config/build.sh, or set KERNEL=)"
    echo "$k"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

show_log() {
    echo "---- last console lines ($1) ----" >&2
    tail -n 30 "$1" | tr -d '\r' | sed 's/^/  | /' >&2
    echo "----" >&2
}

# fail_log LOG MESSAGE
fail_log() {
    echo "FAIL: $2" >&2
    show_log "$1"
    exit 1
}

# How QEMU ended, for messages: its exit status or signal, and the host kernel's OOM report
# when it was SIGKILLed.
qemu_exit_reason() {
    local rc=0
    wait "$VM_PID" 2>/dev/null || rc=$?
    if ((rc > 128)); then
        printf 'QEMU was killed by signal %d (%s)' $((rc - 128)) "$(kill -l $((rc - 128)) 2>/dev/null)"
        if ((rc == 137)); then
            local oom
            oom=$(dmesg 2>/dev/null | grep -iE 'out of memory|oom-kill' | tail -2 | paste -sd';')
            [ -z "$oom" ] || printf '; host kernel: %s' "$oom"
        fi
    else
        printf 'QEMU exited with status %d' "$rc"
    fi
    printf '; host memory: %s MiB available' "$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)"
}

# wait_for LOG REGEX SECONDS: until REGEX shows up in LOG. SECONDS is multiplied by
# TIMEOUT_SCALE (TCG is several times slower). Fails early when QEMU exits first.
wait_for() {
    local log=$1 pattern=$2 limit=$(($3 * ${TIMEOUT_SCALE:-1})) start=$SECONDS
    while ((SECONDS - start < limit)); do
        grep -qE -- "$pattern" "$log" && return 0
        if ! kill -0 "$VM_PID" 2>/dev/null; then
            grep -qE -- "$pattern" "$log" && return 0
            fail_log "$log" "$(qemu_exit_reason) before '$pattern' appeared on the console"
        fi
        sleep "${POLL_INTERVAL:-0.5}"
    done
    fail_log "$log" "'$pattern' did not appear on the console within ${limit}s"
}

# wait_exit SECONDS: wait for QEMU to exit by itself (unscaled: the deadlines are the
# product's, and shutdown is quick even on TCG). Status 1 when it is still running.
wait_exit() {
    local limit=$1 start=$SECONDS
    while kill -0 "$VM_PID" 2>/dev/null; do
        ((SECONDS - start < limit)) || return 1
        sleep "${POLL_INTERVAL:-0.2}"
    done
    wait "$VM_PID" 2>/dev/null || true
}

# Kills the VM if it still runs and forgets its PID (never signal a reused one); the
# test's files stay, for a test that boots again.
kill_vm() {
    if [ -n "${VM_PID:-}" ] && kill -0 "$VM_PID" 2>/dev/null; then
        kill "$VM_PID" 2>/dev/null
        sleep 0.5
        kill -9 "$VM_PID" 2>/dev/null || true
    fi
    [ -z "${VM_PID:-}" ] || wait "$VM_PID" 2>/dev/null || true
    VM_PID=
}

# kill_vm; boot tests also drop their TEST_TMP directory (their EXIT trap).
stop_vm() {
    kill_vm
    if [ -n "${TEST_TMP:-}" ]; then rm -rf "$TEST_TMP"; fi
}
