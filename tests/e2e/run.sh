#!/usr/bin/env bash
# End-to-end tests: build the test guest, start an isolated stack (own state
# dir, port, socket and pools; see scripts/env.sh, profile e2e) the way
# `make run` does, run tests/e2e/test_api.py through nginx, stop what was
# started.  Ends with "e2e: N passed, N failed".
#
#   tests/e2e/run.sh [scenario ...]
set -uo pipefail
umask 022
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

# shellcheck source=scripts/env.sh
. scripts/env.sh e2e

summary_fail() {
    echo "e2e: $*"
    echo "e2e: 0 passed, 1 failed"
    exit 1
}

# Domains whose disks live in this stack's pools belong to earlier e2e runs.
clean_domains() {
    local d
    for d in $(virsh -q -c qemu:///system list --all --name 2>/dev/null); do
        case "$d" in stratus-*) ;; *) continue ;; esac
        if virsh -q -c qemu:///system dumpxml "$d" 2>/dev/null | grep -q "file='$ST_POOLS/"; then
            echo "e2e: removing leftover domain $d"
            virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1
            virsh -q -c qemu:///system undefine "$d" >/dev/null 2>&1
        fi
    done
}

guest=$(tests/e2e/build-guest.sh) || summary_fail "cannot build the test guest"

# A stack left over from an interrupted run, then a fresh state.
scripts/run.sh --profile e2e --stop >/dev/null 2>&1
if [ -x "$ROOT/scripts/services.sh" ]; then
    "$ROOT/scripts/services.sh" start "$ST_RUN/e2e-services.started" ||
        summary_fail "libvirt is not available"
fi
clean_domains
st_undefine_pools
rm -rf "$ST_STATE/db" "$ST_CONSOLE" "$ST_IMPORT" "$ST_LOG"
find "$ST_POOLS" -type f -delete 2>/dev/null

stopped=
stop_all() {
    [ -n "$stopped" ] && return
    stopped=1
    scripts/run.sh --profile e2e --stop
    clean_domains
    st_undefine_pools
    "$ROOT/scripts/services.sh" stop "$ST_RUN/e2e-services.started"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

scripts/run.sh --profile e2e --detach || {
    tail -n 30 "$ST_LOG/api.log" 2>/dev/null
    summary_fail "the stack did not start"
}

E2E_URL=$ST_URL E2E_STATE=$ST_STATE E2E_CONSOLE_DIR=$ST_CONSOLE E2E_IMPORT_DIR=$ST_IMPORT \
    E2E_POOLS_DIR=$ST_POOLS E2E_API_PIDFILE=$ST_RUN/api.pid E2E_GUEST=$guest E2E_ROOT=$ROOT \
    E2E_SERVICES_FILES="$ST_RUN/e2e-services.started:$ST_RUN/test-services.started:$ST_SERVICES_FILE:$ST_BASE_STATE/run/services.started" \
    python3 tests/e2e/test_api.py "$@"
rc=$?
if [ $rc -ne 0 ]; then
    echo "e2e: logs in $ST_LOG (api.log, nginx-error.log)"
fi
exit $rc
