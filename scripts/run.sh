#!/usr/bin/env bash
# Start a stratus stack: libvirt daemons (if needed), stratus-api and nginx.
#
#   scripts/run.sh [--profile run|e2e]            start, stay in the foreground;
#                                                 Ctrl-C stops everything started
#   scripts/run.sh [--profile run|e2e] --detach   start, leave it running, exit
#   scripts/run.sh [--profile run|e2e] --stop     stop a detached stack
#
# The state dir, port and pool names come from scripts/env.sh.  Only the
# libvirt daemons this script started are stopped again.
set -euo pipefail
umask 022

mode=foreground
profile=${STRATUS_PROFILE:-run}
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile=$2; shift 2 ;;
    --profile=*) profile=${1#*=}; shift ;;
    --detach) mode=detach; shift ;;
    --stop) mode=stop; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run: unknown argument $1" >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/env.sh
. "$(dirname "$0")/env.sh" "$profile"

log() { echo "run[$ST_PROFILE]: $*" >&2; }

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stop the process in pid file @1 (and, for the API, any workers left behind).
stop_pidfile() {
    local file=$1 pid kids i
    pid=$(cat "$file" 2>/dev/null || true)
    rm -f "$file"
    pid_alive "$pid" || return 0
    kids=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "pid $pid ignored SIGTERM for 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do
        pid_alive "$k" && kill -KILL "$k" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
}

# Node/process @1's file names: node 0 keeps the plain names.
node_suffix() { [ "$1" -eq 0 ] && echo "" || echo "-$1"; }
node_socket() { [ "$1" -eq 0 ] && echo "$ST_SOCKET" || echo "$ST_RUN/api-$1.sock"; }
node_conf() { [ "$1" -eq 0 ] && echo "$ST_CONF" || echo "$ST_STATE/stratus-$1.conf"; }

stack_stop() {
    local f
    stop_pidfile "$ST_RUN/nginx.pid.run"
    for f in "$ST_RUN"/worker*.pid; do
        [ -e "$f" ] && stop_pidfile "$f"
    done
    for f in "$ST_RUN"/api*.pid; do
        [ -e "$f" ] && stop_pidfile "$f"
    done
    rm -f "$ST_RUN"/api*.sock
    "$ST_ROOT/scripts/services.sh" stop "$ST_SERVICES_FILE"
}

# The configuration of API node @1 (the workers read node 0's): the nodes
# differ only in their socket.
write_config() {
    local node=$1 conf
    conf=$(node_conf "$node")
    cat >"$conf.tmp" <<CONF
# stratus-api configuration, written by scripts/run.sh ($ST_PROFILE profile).
socket = $(node_socket "$node")
workers = $ST_WORKERS
database = $ST_DATABASE
libvirt_uri = qemu:///system
virt_type = $ST_VIRT_TYPE
state_dir = $ST_STATE
pool_images = $ST_POOL_PREFIX-images
pool_default = $ST_POOL_PREFIX-default
pool_snapshots = $ST_POOL_PREFIX-snapshots
pool_images_dir = $ST_POOLS/images
pool_default_dir = $ST_POOLS/default
pool_snapshots_dir = $ST_POOLS/snapshots
console_dir = $ST_CONSOLE
import_dir = $ST_IMPORT
max_body_bytes = $ST_MAX_BODY
stop_timeout_s = $ST_STOP_TIMEOUT_S
log_level = $ST_LOG_LEVEL
admin_email = $ST_ADMIN_EMAIL
admin_password_file = $ST_ADMIN_PASSWORD_FILE
token_keys_file = $ST_STATE/token-keys
allow_registration = $ST_ALLOW_REGISTRATION
password_hash = $ST_PASSWORD_HASH
login_lockout_s = $ST_LOGIN_LOCKOUT_S
instance = $ST_POOL_PREFIX
worker_concurrency = $ST_WORKER_CONCURRENCY
lease_s = $ST_LEASE_S
reconcile_interval_s = $ST_RECONCILE_INTERVAL_S
test_hooks = $ST_TEST_HOOKS
CONF
    mv "$conf.tmp" "$conf"
}

# nginx's upstreams: stratus_api over every node, and stratus_node<i> for
# each one alone, chosen by the X-Stratus-Node request header (tests use it
# to ask a given node).
write_upstreams() {
    local i f=$ST_NGINX/upstreams.conf
    {
        echo "upstream stratus_api {"
        for ((i = 0; i < ST_API_NODES; i++)); do
            echo "    server unix:$(node_socket "$i");"
        done
        echo "}"
        for ((i = 0; i < ST_API_NODES; i++)); do
            echo "upstream stratus_node$i { server unix:$(node_socket "$i"); }"
        done
        echo "map \$http_x_stratus_node \$stratus_upstream {"
        echo "    default stratus_api;"
        for ((i = 0; i < ST_API_NODES; i++)); do
            echo "    $i stratus_node$i;"
        done
        echo "}"
    } >"$f"
}

write_nginx_config() {
    write_upstreams
    sed -e "s|@PREFIX@|$ST_NGINX|g" -e "s|@LOG_DIR@|$ST_LOG|g" -e "s|@LISTEN@|$ST_LISTEN|g" \
        -e "s|@SOCKET@|$ST_SOCKET|g" -e "s|@MAX_BODY@|$ST_MAX_BODY|g" \
        "$ST_ROOT/nginx/stratus.conf.in" >"$ST_NGINX/nginx.conf"
    local out
    if ! out=$(nginx -q -t -p "$ST_NGINX" -c "$ST_NGINX/nginx.conf" -g 'daemon off;' 2>&1); then
        echo "$out" >&2
        return 1
    fi
}

make_layout() {
    local d
    for d in "$ST_STATE" "$ST_STATE/db" "$ST_POOLS" "$ST_POOLS/images" "$ST_POOLS/default" \
        "$ST_POOLS/snapshots" "$ST_CONSOLE" "$ST_IMPORT" "$ST_RUN" "$ST_LOG" "$ST_NGINX" \
        "$ST_NGINX/tmp"; do
        mkdir -p "$d"
    done
    # QEMU (user libvirt-qemu) opens disks and writes console logs here.
    chmod 755 "$ST_STATE" "$ST_POOLS" "$ST_POOLS"/* "$ST_CONSOLE" "$ST_IMPORT"
    chmod 700 "$ST_STATE/db" "$ST_RUN" "$ST_NGINX"
    case "$ST_STATE" in
    /var/lib/stratus/*) chmod 755 /var/lib/stratus ;;
    esac
    if ! st_qemu_can_traverse "$ST_POOLS/default"; then
        log "warning: libvirt-qemu cannot reach $ST_POOLS/default; guests will not start"
    fi
}

# The first admin, on first start only: stratus-admin says the password once.
bootstrap_admin() {
    [ -x "$ST_ADMIN_BIN" ] || { log "$ST_ADMIN_BIN is missing: run make all"; return 1; }
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(STRATUS_[A-Za-z0-9_]*\)=.*/-u \1/p') \
        "$ST_ADMIN_BIN" -c "$ST_CONF" bootstrap
}

# API node @1 (0 when not given).
start_api() {
    local node=${1:-0} pid sfx
    sfx=$(node_suffix "$node")
    [ -x "$ST_API_BIN" ] || { log "$ST_API_BIN is missing: run make all"; return 1; }
    rm -f "$(node_socket "$node")"
    # The config file is the only source: STRATUS_* variables in this
    # environment would override it inside the API.
    # shellcheck disable=SC2046
    setsid env $(env | sed -n 's/^\(STRATUS_[A-Za-z0-9_]*\)=.*/-u \1/p') \
        "$ST_API_BIN" -c "$(node_conf "$node")" >>"$ST_LOG/api$sfx.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$ST_RUN/api$sfx.pid"
}

# Worker process @1 (0 when not given).
start_worker() {
    local n=${1:-0} pid sfx
    sfx=$(node_suffix "$n")
    [ -x "$ST_WORKER_BIN" ] || { log "$ST_WORKER_BIN is missing: run make all"; return 1; }
    # shellcheck disable=SC2046
    setsid env $(env | sed -n 's/^\(STRATUS_[A-Za-z0-9_]*\)=.*/-u \1/p') \
        "$ST_WORKER_BIN" -c "$ST_CONF" >>"$ST_LOG/worker$sfx.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$ST_RUN/worker$sfx.pid"
}

start_nginx() {
    local pid
    setsid nginx -p "$ST_NGINX" -c "$ST_NGINX/nginx.conf" -g 'daemon off;' \
        >>"$ST_LOG/nginx-stderr.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$ST_RUN/nginx.pid.run"
}

# Every API node answers /v1/health with 200 through nginx.
wait_health() {
    local i node=0 code sfx
    for ((i = 0; i < 60; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "X-Stratus-Node: $node" \
            "$ST_URL/v1/health" || true)
        if [ "$code" = 200 ]; then
            node=$((node + 1))
            [ "$node" -ge "$ST_API_NODES" ] && return 0
            continue
        fi
        sfx=$(node_suffix "$node")
        if ! pid_alive "$(cat "$ST_RUN/api$sfx.pid")"; then
            log "stratus-api exited; last lines of $ST_LOG/api$sfx.log:"
            tail -n 20 "$ST_LOG/api$sfx.log" >&2
            return 1
        fi
        if ! pid_alive "$(cat "$ST_RUN/nginx.pid.run")"; then
            log "nginx exited; last lines of $ST_LOG/nginx-error.log:"
            tail -n 20 "$ST_LOG/nginx-error.log" "$ST_LOG/nginx-stderr.log" >&2 2>/dev/null
            return 1
        fi
        sleep 0.5
    done
    log "GET $ST_URL/v1/health (node $node) did not answer 200 within 30 s (last: ${code:-none})"
    tail -n 20 "$ST_LOG/api$(node_suffix "$node").log" >&2
    return 1
}

stack_start() {
    local pid i
    for f in "$ST_RUN"/api*.pid "$ST_RUN"/worker*.pid "$ST_RUN/nginx.pid.run"; do
        pid=$(cat "$f" 2>/dev/null || true)
        if pid_alive "$pid"; then
            log "a stack is already running from $ST_STATE (pid $pid); stop it first (scripts/run.sh --profile $ST_PROFILE --stop)"
            return 1
        fi
    done
    if curl -s -o /dev/null --max-time 2 "$ST_URL/" 2>/dev/null; then
        log "something already listens on $ST_LISTEN"
        return 1
    fi
    make_layout
    for ((i = 0; i < ST_API_NODES; i++)); do
        write_config "$i"
    done
    write_nginx_config || { log "nginx rejects $ST_NGINX/nginx.conf"; return 1; }
    "$ST_ROOT/scripts/services.sh" start "$ST_SERVICES_FILE"
    bootstrap_admin || { log "cannot create the first admin"; return 1; }
    for ((i = 0; i < ST_API_NODES; i++)); do
        start_api "$i"
    done
    for ((i = 0; i < ST_WORKER_PROCS; i++)); do
        start_worker "$i"
    done
    start_nginx
    wait_health
}

case "$mode" in
stop)
    stack_stop
    log "stopped"
    ;;
detach)
    if ! stack_start; then
        stack_stop
        exit 1
    fi
    log "stratus is up at $ST_URL (state $ST_STATE)"
    ;;
foreground)
    trap 'trap - INT TERM; echo >&2; log "stopping"; stack_stop; exit 0' INT TERM
    if ! stack_start; then
        stack_stop
        exit 1
    fi
    echo "stratus is up at $ST_URL/v1/"
    echo "  admin: $ST_ADMIN_EMAIL, password in $ST_ADMIN_PASSWORD_FILE (POST /v1/auth/tokens to log in)"
    echo "  put disk images to import (POST /v1/images source_path) in $ST_IMPORT"
    echo "  state in $ST_STATE; logs in $ST_LOG; Ctrl-C stops"
    # Stay in front until a signal arrives or a component dies.
    while pid_alive "$(cat "$ST_RUN/api.pid" 2>/dev/null)" &&
        pid_alive "$(cat "$ST_RUN/worker.pid" 2>/dev/null)" &&
        pid_alive "$(cat "$ST_RUN/nginx.pid.run" 2>/dev/null)"; do
        sleep 1 &
        wait $! || true
    done
    log "a component exited (see $ST_LOG); stopping"
    stack_stop
    exit 1
    ;;
esac
