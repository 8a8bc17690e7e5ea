#!/usr/bin/env bash
# Run every unit test program in BUILDDIR/tests, then every contract test
# program in BUILDDIR/contract twice: on SQLite (but test_pg_*, which are
# PostgreSQL's own) and on PostgreSQL (all of them); count cmocka cases.
#
#   scripts/run-unit.sh BUILDDIR
#
# The PostgreSQL pass uses STRATUS_TEST_PG_URL when it is set; otherwise
# this starts a throwaway server (scripts/pg.sh) in a directory of its own
# for BUILDDIR and stops it at exit.  A pass that cannot have its server
# still runs, and its cases fail: the contract suite is never skipped.
#
# Ends with "unit: N passed, N failed".  A program that crashes, or exits
# non-zero without saying how many cases failed, counts as one failure more.
set -uo pipefail

build=${1:?usage: run-unit.sh BUILDDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
passed=0
failed=0
pg_dir=
shopt -s nullglob

# Run one program; $2 labels its output (the store, for contract programs).
run_prog() {
    local prog=$1 label=$2 out rc p f
    out=$(mktemp)
    echo "unit: $prog${label:+ on $label}"
    # cmocka prints its summary on stdout; sanitizer reports go to stderr.
    timeout 300 "$prog" >"$out" 2>&1
    rc=$?
    if [ -n "$label" ]; then
        sed "s/^/[$label] /" "$out"
    else
        cat "$out"
    fi
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    rm -f "$out"
    if [ "$rc" -ne 0 ] && [ "$rc" -lt 124 ] && [ "$rc" -gt "$f" ]; then
        # cmocka exits with the number of cases that failed, including those
        # whose set-up failed, which its FAILED summary leaves out.
        echo "unit: $prog${label:+ on $label} exited with status $rc"
        f=$rc
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        if [ "$rc" -gt 128 ]; then
            echo "unit: $prog${label:+ on $label} died with signal $((rc - 128))"
        else
            echo "unit: $prog${label:+ on $label} exited with status $rc"
        fi
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

stop_pg() {
    [ -z "$pg_dir" ] || "$root/scripts/pg.sh" stop "$pg_dir"
}
trap stop_pg EXIT

progs=("$build"/tests/test_*)
[ ${#progs[@]} -gt 0 ] || echo "unit: no test programs in $build/tests" >&2
for prog in "${progs[@]}"; do
    [ -x "$prog" ] && [ -f "$prog" ] || continue
    run_prog "$prog" ""
done

contract=()
for prog in "$build"/contract/test_*; do
    [ -x "$prog" ] && [ -f "$prog" ] && contract+=("$prog")
done
[ ${#contract[@]} -gt 0 ] || echo "unit: no contract test programs in $build/contract" >&2

for prog in "${contract[@]}"; do
    case $(basename "$prog") in test_pg_*) continue ;; esac
    STRATUS_TEST_STORE=sqlite run_prog "$prog" sqlite
done

if [ ${#contract[@]} -gt 0 ] && [ -z "${STRATUS_TEST_PG_URL:-}" ]; then
    # One server per build directory, so that build and build-asan can run at once.
    pg_dir=/tmp/stratus-pg-unit-$(realpath "$build" | sha256sum | cut -c1-12)
    if url=$("$root/scripts/pg.sh" start "$pg_dir" 55439); then
        export STRATUS_TEST_PG_URL=$url
    else
        echo "unit: PostgreSQL did not start in $pg_dir; the postgresql pass will fail"
    fi
fi
for prog in "${contract[@]}"; do
    STRATUS_TEST_STORE=postgresql run_prog "$prog" postgresql
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
