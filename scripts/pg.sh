#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and benchmarks, run as the
# unprivileged user "postgres" (made by Debian's postgresql package), in its
# own data directory, listening only on a unix socket in that directory.
#
#   scripts/pg.sh start DIR [PORT]   initdb (first time) and start; prints the
#                                    URL of database "stratus" on it
#   scripts/pg.sh url DIR [PORT]     the URL of database NAME (default stratus),
#                                    with NAME from $STRATUS_PG_DB
#   scripts/pg.sh createdb DIR NAME [PORT]  a fresh, empty database NAME
#   scripts/pg.sh stop DIR           stop it (the directory stays)
#
# DIR must not be under a directory "postgres" cannot traverse; /tmp or
# var/ are fine.  Durability settings are relaxed (fsync off): nothing in
# it outlives the run.
set -euo pipefail

PG_USER=postgres
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

log() { echo "pg: $*" >&2; }

need() {
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
        { log "PostgreSQL server binaries not found (scripts/deps.sh installs postgresql)"; exit 1; }
    id "$PG_USER" >/dev/null 2>&1 || { log "no user $PG_USER"; exit 1; }
}

as_pg() {
    if [ "$(id -un)" = "$PG_USER" ]; then
        "$@"
    else
        runuser -u "$PG_USER" -- "$@"
    fi
}

url() {
    local dir=$1 port=$2 name=${3:-${STRATUS_PG_DB:-stratus}}
    echo "postgresql:///$name?host=$dir/sock&port=$port&user=$PG_USER"
}

start() {
    local dir=$1 port=$2 i
    need
    mkdir -p "$dir"
    chown "$PG_USER": "$dir"
    chmod 700 "$dir"
    if [ ! -s "$dir/data/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --auth=trust -E UTF8 \
            --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_pg mkdir -p "$dir/sock"
    if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        url "$dir" "$port"
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir/sock -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null || { log "server did not start:"; tail -n 20 "$dir/server.log" >&2; exit 1; }
    # The socket directory is the data directory's sibling: root and the
    # project's programs reach it, other users do not.
    chmod 711 "$dir"
    for ((i = 0; i < 100; i++)); do
        as_pg "$PG_BIN/pg_isready" -q -h "$dir/sock" -p "$port" && break
        sleep 0.1
    done
    as_pg "$PG_BIN/psql" -q -h "$dir/sock" -p "$port" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'stratus'" | grep -q 1 ||
        as_pg "$PG_BIN/createdb" -h "$dir/sock" -p "$port" stratus
    log "PostgreSQL running in $dir (socket $dir/sock, port $port)"
    url "$dir" "$port"
}

createdb() {
    local dir=$1 name=$2 port=$3
    need
    as_pg "$PG_BIN/dropdb" --if-exists -h "$dir/sock" -p "$port" "$name" 2>/dev/null
    as_pg "$PG_BIN/createdb" -h "$dir/sock" -p "$port" "$name"
    url "$dir" "$port" "$name"
}

stop() {
    local dir=$1
    need
    [ -s "$dir/data/PG_VERSION" ] || return 0
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

cmd=${1:-}
case "$cmd" in
start) start "$2" "${3:-5432}" ;;
url) url "$2" "${3:-5432}" ;;
createdb) createdb "$2" "$3" "${4:-5432}" ;;
stop) stop "$2" ;;
*)
    echo "usage: $0 start|url|createdb|stop DIR ..." >&2
    exit 2
    ;;
esac
