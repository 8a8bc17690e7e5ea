#!/usr/bin/env bash
# Run every unit test program in BUILDDIR/tests and count cmocka test cases.
#
#   scripts/run-unit.sh BUILDDIR
#
# Ends with "unit: N passed, N failed".  A program that crashes, or exits
# non-zero without saying how many cases failed, counts as one failure more.
set -uo pipefail

build=${1:?usage: run-unit.sh BUILDDIR}
passed=0
failed=0
shopt -s nullglob
progs=("$build"/tests/test_*)
[ ${#progs[@]} -gt 0 ] || echo "unit: no test programs in $build/tests" >&2

for prog in "${progs[@]}"; do
    [ -x "$prog" ] && [ -f "$prog" ] || continue
    out=$(mktemp)
    # cmocka prints its summary on stdout; sanitizer reports go to stderr.
    timeout 300 "$prog" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {print s + 0}')
    rm -f "$out"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        if [ "$rc" -gt 128 ]; then
            echo "unit: $prog died with signal $((rc - 128))"
        else
            echo "unit: $prog exited with status $rc"
        fi
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
