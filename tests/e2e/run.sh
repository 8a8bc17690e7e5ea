#!/usr/bin/env bash
# End-to-end tests: build the test guest, start an isolated stack (own state
# dir, port, socket and pools; see scripts/env.sh, profile e2e) the way
# `make run` does, run tests/e2e/test_api.py through nginx, stop what was
# started.  Ends with "e2e: N passed, N failed".
#
#   tests/e2e/run.sh [scenario ...]
#
# STRATUS_E2E_STORE=postgresql runs the stack on a fresh database of a
# throwaway PostgreSQL server (scripts/pg.sh; reused when it runs already,
# else started and stopped here); the default is SQLite.  STRATUS_API_NODES
# and STRATUS_WORKER_PROCS start more than one API master and worker.
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

store=${STRATUS_E2E_STORE:-sqlite}
pg_started=
case "$store" in
sqlite) unset STRATUS_DATABASE ;;
postgresql)
    if ! runuser -u postgres -- test -S "$ST_PG_DIR/sock/.s.PGSQL.$ST_PG_PORT" 2>/dev/null; then
        scripts/pg.sh start "$ST_PG_DIR" "$ST_PG_PORT" >/dev/null || summary_fail "PostgreSQL did not start"
        pg_started=1
    fi
    STRATUS_DATABASE=$(scripts/pg.sh createdb "$ST_PG_DIR" stratus_e2e "$ST_PG_PORT") ||
        summary_fail "cannot make a fresh PostgreSQL database"
    export STRATUS_DATABASE
    ;;
*) summary_fail "STRATUS_E2E_STORE must be sqlite or postgresql, not '$store'" ;;
esac
echo "e2e: store $store, $ST_API_NODES API node(s), $ST_WORKER_PROCS worker process(es)"

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
    [ -z "$pg_started" ] || scripts/pg.sh stop "$ST_PG_DIR"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

scripts/run.sh --profile e2e --detach || {
    tail -n 30 "$ST_LOG/api.log" 2>/dev/null
    summary_fail "the stack did not start"
}

E2E_URL=$ST_URL E2E_STATE=$ST_STATE E2E_CONSOLE_DIR=$ST_CONSOLE E2E_IMPORT_DIR=$ST_IMPORT \
    E2E_POOLS_DIR=$ST_POOLS E2E_API_PIDFILE=$ST_RUN/api.pid E2E_GUEST=$guest E2E_ROOT=$ROOT \
    E2E_STORE=$store E2E_NODES=$ST_API_NODES E2E_WORKER_PROCS=$ST_WORKER_PROCS \
    E2E_PG_DIR=$ST_PG_DIR E2E_PG_PORT=$ST_PG_PORT \
    E2E_SERVICES_FILES="$ST_RUN/e2e-services.started:$ST_RUN/test-services.started:$ST_SERVICES_FILE:$ST_BASE_STATE/run/services.started" \
    python3 tests/e2e/test_api.py "$@"
rc=$?
if [ $rc -ne 0 ]; then
    echo "e2e: logs in $ST_LOG (api.log, nginx-error.log)"
fi
exit $rc
