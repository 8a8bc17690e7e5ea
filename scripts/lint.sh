#!/usr/bin/env bash
# Static checks: cppcheck on the C sources, clang-format on tracked C files.
# Ends with "lint: N passed, N failed": cppcheck counts as one check, and
# each tracked file clang-format looks at as one more.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
dirs=()
for d in src app tests/unit tests/contract bench; do
    [ -d "$d" ] && dirs+=("$d")
done

echo "lint: cppcheck ${dirs[*]}"
if cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 --inline-suppr \
    --std=c11 -D_GNU_SOURCE -Isrc -Iapp -Itests/unit -Itests "${dirs[@]}"; then
    passed=$((passed + 1))
else
    echo "lint: cppcheck found problems"
    failed=$((failed + 1))
fi

mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null)
echo "lint: clang-format on ${#files[@]} tracked files"
fmt_failed=0
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if clang-format --dry-run --Werror "$f"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        fmt_failed=$((fmt_failed + 1))
    fi
done
[ "$fmt_failed" -eq 0 ] || echo "lint: $fmt_failed files differ from .clang-format (run make format)"

echo "lint: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
