#!/usr/bin/env bash
# Every test stage, in order: unit (with the contract suite on SQLite and
# PostgreSQL), the same under ASan+UBSan, lint, the Vagrant provisioning
# check, e2e on SQLite, e2e on PostgreSQL, and the scale-out run (two API
# nodes and two workers on one PostgreSQL).  Each stage ends with
# "<stage>: N passed, N failed"; the last line is the sum over all stages,
# "N passed, N failed".  Exits non-zero when anything failed.  Only the
# libvirt daemons and the PostgreSQL server started here are stopped at
# the end.
set -uo pipefail
umask 022
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=scripts/env.sh
. scripts/env.sh e2e
mkdir -p "$ST_RUN"
services_file=$ST_RUN/test-services.started
total_passed=0
total_failed=0

pg_started=
finish() {
    "$ROOT/scripts/services.sh" stop "$services_file" 2>&1
    [ -z "$pg_started" ] || "$ROOT/scripts/pg.sh" stop "$ST_PG_DIR" 2>&1
}
trap finish EXIT
trap 'exit 130' INT TERM

# Run a stage, show its output, and add the "<name>: N passed, N failed"
# line it prints to the totals.
stage() {
    local label=$1 name=$2 out rc p f line
    shift 2
    echo "=== $label"
    out=$(mktemp)
    "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$out" | tail -n1)
    rm -f "$out"
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed.*/\1/')
    else
        p=0
        f=1
        echo "$label: no summary line (exit status $rc); counted as 1 failure"
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$label: exit status $rc without a failed count; counted as 1 failure"
        f=1
    fi
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
}

if ! scripts/services.sh start "$services_file"; then
    echo "test: libvirt is not available; the e2e stage will fail"
fi

# One throwaway PostgreSQL server (user postgres, a unix socket only) for
# the contract suite and the e2e runs on PostgreSQL.
if STRATUS_TEST_PG_URL=$(scripts/pg.sh start "$ST_PG_DIR" "$ST_PG_PORT"); then
    pg_started=1
    export STRATUS_TEST_PG_URL
else
    echo "test: PostgreSQL did not start; its stages will fail"
    unset STRATUS_TEST_PG_URL
fi

stage unit unit scripts/run-unit.sh build
# What `make asan` does, with CFLAGS from the environment so that the
# Makefile's own flags (-Isrc ...) are appended rather than replaced.
stage asan unit env CFLAGS="-O1 -g" make --no-print-directory BUILD=build-asan SAN=1 unit
stage lint lint scripts/lint.sh
stage provision provision vagrant/provision.sh --check
stage "e2e (sqlite)" e2e env STRATUS_E2E_STORE=sqlite tests/e2e/run.sh
stage "e2e (postgresql)" e2e env STRATUS_E2E_STORE=postgresql tests/e2e/run.sh
stage "scale-out (postgresql, 2 API nodes, 2 workers)" e2e env STRATUS_E2E_STORE=postgresql \
    STRATUS_API_NODES=2 STRATUS_WORKER_PROCS=2 tests/e2e/run.sh scaleout

# Stop the daemons first, so the total stays the very last line.
trap - EXIT
finish
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
