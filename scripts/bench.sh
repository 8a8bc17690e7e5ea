#!/usr/bin/env bash
# make bench: how listing scales, and what the API serves through nginx.
#
#  1. bench_list in process against libvirt's test driver, N = 100, 1 000,
#     10 000, on SQLite and on PostgreSQL (a throwaway server, scripts/pg.sh)
#  2. bench_list against qemu:///system with 1 000 defined, shut-off domains
#  3. wrk through nginx (bench profile: port 18081, own state and pools) with
#     1 000 VMs: GET /v1/vms?limit=1000 and GET /v1/vms/{id}, the stack on
#     PostgreSQL, then on SQLite
#  4. durable operations: in process (accept cost, creates and deletes a
#     second for one worker, test driver), then through nginx the latency of
#     the 202 and the tiny guest's time from POST to running and to booted
#
# Figures only: nothing here fails on timing.
set -uo pipefail
umask 022
cd "$(dirname "$0")/.."
ROOT=$PWD
BENCH=$ROOT/build/bench/bench_list
BENCH_OPS=$ROOT/build/bench/bench_ops
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}

# shellcheck source=scripts/env.sh
. scripts/env.sh bench
mkdir -p "$ST_RUN"
services_file=$ST_RUN/bench-services.started

pg_started=
finish() {
    [ -n "${seeded:-}" ] && "$BENCH" --unseed "$seeded" qemu:///system
    scripts/run.sh --profile bench --stop >/dev/null 2>&1
    st_undefine_pools
    scripts/services.sh stop "$services_file" >/dev/null 2>&1
    [ -z "$pg_started" ] || scripts/pg.sh stop "$ST_PG_DIR"
}
trap finish EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
    "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n1)"
echo
echo "== list: service (1 SQL query + 1 list_all) vs naive per-VM loop vs bare list_all"
echo "-- in process, libvirt test driver"
"$BENCH" 100 1000 10000
scripts/pg.sh start "$ST_PG_DIR" "$ST_PG_PORT" >/dev/null || { echo "bench: PostgreSQL did not start"; exit 1; }
pg_started=1
echo "   (PostgreSQL 15 on a unix socket, fsync off; SQLite in WAL mode, synchronous=NORMAL)"
"$BENCH" --db "$(scripts/pg.sh createdb "$ST_PG_DIR" stratus_bench_list "$ST_PG_PORT")" 100 1000 10000

scripts/services.sh start "$services_file" || { echo "bench: libvirt is not available"; exit 1; }
echo "-- qemu:///system, defined shut-off domains"
"$BENCH" --uri qemu:///system 1000

echo
echo "== HTTP through nginx (wrk, 2 threads, 16 connections, ${WRK_SECONDS} s each)"

# One line per run: requests/s, p50, p99 (wrk --latency).
wrk_line() {
    local label=$1 url=$2 out
    out=$(wrk -t2 -c16 -d"${WRK_SECONDS}s" --latency -H "Authorization: Bearer $token" "$url" 2>&1)
    printf '%-40s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$label" \
        "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
        "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        "$(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)"
}

# A fresh stack on database @1 (a URL, or "" for SQLite under the state
# dir) with 1 000 seeded VMs; sets $token, $id and $seeded.
http_stack() {
    local db=$1
    scripts/run.sh --profile bench --stop >/dev/null 2>&1
    st_undefine_pools
    rm -rf "$ST_STATE/db" "$ST_STATE/token-keys" "$ST_ADMIN_PASSWORD_FILE"
    if [ -n "$db" ]; then
        STRATUS_DATABASE=$db scripts/run.sh --profile bench --detach || return 1
    else
        db=$ST_DB
        env -u STRATUS_DATABASE scripts/run.sh --profile bench --detach || return 1
    fi
    id=$("$BENCH" --seed "$db" qemu:///system 1000) || return 1
    seeded=$db
    # Every request carries the bootstrapped admin's token (admins see every VM).
    token=$(curl -s -H 'Content-Type: application/json' \
        -d "{\"email\":\"$ST_ADMIN_EMAIL\",\"password\":\"$(cat "$ST_ADMIN_PASSWORD_FILE")\"}" \
        "$ST_URL/v1/auth/tokens" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') ||
        { echo "bench: cannot log in as $ST_ADMIN_EMAIL"; return 1; }
}

http_figures() {
    local store=$1
    wrk_line "GET /v1/vms?limit=1000   [$store]" "$ST_URL/v1/vms?limit=1000"
    wrk_line "GET /v1/vms/{id}         [$store]" "$ST_URL/v1/vms/$id"
}

http_stack "$(scripts/pg.sh createdb "$ST_PG_DIR" stratus_bench_http "$ST_PG_PORT")" || exit 1
http_figures postgresql
"$BENCH" --unseed "$seeded" qemu:///system
seeded=
# SQLite last: the operations figures below use this stack.
http_stack "" || exit 1
http_figures sqlite

echo
echo "== operations, in process (libvirt test driver)"
"$BENCH_OPS" 500

echo "-- through nginx and stratus-worker (qemu:///system, TCG)"
# The seeded rows go with their domains, so the worker finds no vanished ones.
"$BENCH" --unseed "$seeded" qemu:///system
seeded=
guest=$(tests/e2e/build-guest.sh) || { echo "bench: cannot build the test guest"; exit 1; }
cp "$guest" "$ST_IMPORT/bench-guest.qcow2"
chmod 644 "$ST_IMPORT/bench-guest.qcow2"
image=$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench-guest\",\"source_path\":\"$ST_IMPORT/bench-guest.qcow2\",\"format\":\"qcow2\"}" \
    "$ST_URL/v1/images" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])') ||
    { echo "bench: cannot register the test guest"; exit 1; }
python3 bench/bench_http_ops.py "$ST_URL" "$token" "$image" "$ST_CONSOLE" 30
