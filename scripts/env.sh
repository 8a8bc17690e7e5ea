# shellcheck shell=bash
# Sourced by the other scripts: where a stratus stack keeps its state, which
# port and socket it uses, and the paths derived from them.
#
#   . scripts/env.sh [run|e2e]
#
# Profiles: "run" (make run: 127.0.0.1:8080, pools stratus-*), "e2e"
# (tests: 127.0.0.1:18080, pools stratus-e2e-*, state in <state>/e2e) and
# "bench" (make bench: 127.0.0.1:18081, pools stratus-bench-*, state in
# <state>/bench), so they can run side by side.  Overrides: STRATUS_STATE_DIR, STRATUS_PORT,
# STRATUS_VIRT_TYPE, STRATUS_WORKERS, STRATUS_STOP_TIMEOUT_S,
# STRATUS_LOG_LEVEL, STRATUS_MAX_BODY_BYTES, STRATUS_ADMIN_EMAIL,
# STRATUS_ALLOW_REGISTRATION, STRATUS_PASSWORD_HASH, STRATUS_LOGIN_LOCKOUT_S,
# STRATUS_DATABASE, STRATUS_API_NODES, STRATUS_WORKER_PROCS, STRATUS_PG_DIR,
# STRATUS_POOL_PREFIX.
#
# Results are plain shell variables prefixed ST_ (not exported): the API
# itself reads STRATUS_* variables from the environment, and the scripts give
# it a config file as the single source instead.

ST_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ST_PROFILE=${1:-${ST_PROFILE:-run}}

# True when user libvirt-qemu (QEMU under qemu:///system) can reach @1: every
# existing ancestor must be searchable by it.
st_qemu_can_traverse() {
    local p=$1
    id libvirt-qemu >/dev/null 2>&1 || return 0 # no such user: nothing to check
    while [ -n "$p" ] && [ "$p" != / ]; do
        if [ -d "$p" ] && ! runuser -u libvirt-qemu -- test -x "$p" 2>/dev/null; then
            return 1
        fi
        p=$(dirname "$p")
    done
    return 0
}

st_base_state_dir() {
    local dir hash
    if [ -n "${STRATUS_STATE_DIR:-}" ]; then
        case "$STRATUS_STATE_DIR" in
        /*) echo "$STRATUS_STATE_DIR" ;;
        *) echo "$PWD/$STRATUS_STATE_DIR" ;;
        esac
        return
    fi
    dir=$ST_ROOT/var
    if st_qemu_can_traverse "$dir"; then
        echo "$dir"
        return
    fi
    hash=$(printf '%s' "$ST_ROOT" | sha256sum | cut -c1-12)
    if [ -z "${ST_FALLBACK_SAID:-}" ]; then
        echo "env: libvirt-qemu cannot reach $dir; using /var/lib/stratus/$hash instead" >&2
        export ST_FALLBACK_SAID=1
    fi
    echo "/var/lib/stratus/$hash"
}

ST_BASE_STATE=$(st_base_state_dir)
case "$ST_PROFILE" in
run)
    ST_STATE=$ST_BASE_STATE
    ST_PORT=${STRATUS_PORT:-8080}
    ST_POOL_PREFIX=stratus
    ST_VIRT_TYPE=${STRATUS_VIRT_TYPE:-auto}
    ST_STOP_TIMEOUT_S=${STRATUS_STOP_TIMEOUT_S:-30}
    ST_LOGIN_LOCKOUT_S=${STRATUS_LOGIN_LOCKOUT_S:-900}
    ST_LEASE_S=${STRATUS_LEASE_S:-30}
    ST_RECONCILE_INTERVAL_S=${STRATUS_RECONCILE_INTERVAL_S:-60}
    ST_TEST_HOOKS=false
    ;;
e2e)
    ST_STATE=$ST_BASE_STATE/e2e
    ST_PORT=${STRATUS_E2E_PORT:-18080}
    ST_POOL_PREFIX=stratus-e2e
    ST_VIRT_TYPE=${STRATUS_VIRT_TYPE:-qemu}
    ST_STOP_TIMEOUT_S=${STRATUS_STOP_TIMEOUT_S:-5}
    # Short, so the throttling test can see a lockout end.
    ST_LOGIN_LOCKOUT_S=${STRATUS_LOGIN_LOCKOUT_S:-4}
    # Short, so that crash tests see a dead worker's operation taken again soon.
    ST_LEASE_S=${STRATUS_LEASE_S:-6}
    ST_RECONCILE_INTERVAL_S=${STRATUS_RECONCILE_INTERVAL_S:-5}
    # The worker honours STRATUS_TEST_CRASH_AFTER only with this.
    ST_TEST_HOOKS=true
    ;;
bench)
    ST_STATE=$ST_BASE_STATE/bench
    ST_PORT=${STRATUS_BENCH_PORT:-18081}
    ST_POOL_PREFIX=stratus-bench
    ST_VIRT_TYPE=${STRATUS_VIRT_TYPE:-qemu}
    ST_STOP_TIMEOUT_S=${STRATUS_STOP_TIMEOUT_S:-5}
    ST_LOGIN_LOCKOUT_S=${STRATUS_LOGIN_LOCKOUT_S:-900}
    ST_LEASE_S=${STRATUS_LEASE_S:-30}
    ST_RECONCILE_INTERVAL_S=${STRATUS_RECONCILE_INTERVAL_S:-60}
    ST_TEST_HOOKS=false
    ;;
*)
    echo "env: unknown profile '$ST_PROFILE' (run, e2e or bench)" >&2
    return 2
    ;;
esac
ST_POOL_PREFIX=${STRATUS_POOL_PREFIX:-$ST_POOL_PREFIX}

ST_LISTEN=127.0.0.1:$ST_PORT
ST_URL=http://$ST_LISTEN
ST_WORKERS=${STRATUS_WORKERS:-4}
ST_LOG_LEVEL=${STRATUS_LOG_LEVEL:-info}
ST_MAX_BODY=${STRATUS_MAX_BODY_BYTES:-65536}
ST_RUN=$ST_STATE/run
ST_LOG=$ST_STATE/log
ST_SOCKET=$ST_RUN/api.sock
ST_CONF=$ST_STATE/stratus.conf
ST_DB=$ST_STATE/db/stratus.db
# The stack's database: SQLite under the state dir unless STRATUS_DATABASE
# names another (postgresql://...).
ST_DATABASE=${STRATUS_DATABASE:-$ST_DB}
# Scale-out on one machine: this many stratus-api masters (each its own
# socket, one nginx upstream over all) and stratus-worker processes.
ST_API_NODES=${STRATUS_API_NODES:-1}
ST_WORKER_PROCS=${STRATUS_WORKER_PROCS:-1}
# A throwaway PostgreSQL server for this profile (scripts/pg.sh), when tests
# or benchmarks run on PostgreSQL: under /tmp, where user postgres can reach it.
ST_PG_DIR=${STRATUS_PG_DIR:-/tmp/stratus-pg-$(printf '%s' "$ST_STATE" | sha256sum | cut -c1-12)}
ST_PG_PORT=${STRATUS_PG_PORT:-55432}
ST_POOLS=$ST_STATE/pools
ST_CONSOLE=$ST_STATE/console
ST_IMPORT=$ST_STATE/import
ST_NGINX=$ST_STATE/nginx
ST_API_BIN=${STRATUS_API_BIN:-$ST_ROOT/build/stratus-api}
ST_ADMIN_BIN=${STRATUS_ADMIN_BIN:-$ST_ROOT/build/stratus-admin}
ST_WORKER_BIN=${STRATUS_WORKER_BIN:-$ST_ROOT/build/stratus-worker}
ST_WORKER_CONCURRENCY=${STRATUS_WORKER_CONCURRENCY:-4}
ST_ADMIN_EMAIL=${STRATUS_ADMIN_EMAIL:-admin@localhost}
ST_ALLOW_REGISTRATION=${STRATUS_ALLOW_REGISTRATION:-false}
ST_PASSWORD_HASH=${STRATUS_PASSWORD_HASH:-interactive}
# Written once by stratus-admin bootstrap when it creates the first admin.
ST_ADMIN_PASSWORD_FILE=$ST_STATE/admin-password
# Daemons this stack started (scripts/services.sh); stopped with the stack.
ST_SERVICES_FILE=$ST_RUN/services.started

if [ ${#ST_SOCKET} -ge 100 ]; then
    echo "env: socket path $ST_SOCKET is too long for a unix socket; set STRATUS_STATE_DIR" >&2
    return 2
fi

# Undefine this profile's storage pools (the files stay).  For the test and
# bench profiles, whose pool names belong to them alone: a definition left by
# an earlier run, perhaps from another checkout at another path, would make
# the API refuse to start.
st_undefine_pools() {
    local p
    for p in "$ST_POOL_PREFIX"-images "$ST_POOL_PREFIX"-default "$ST_POOL_PREFIX"-snapshots; do
        virsh -q -c qemu:///system pool-info "$p" >/dev/null 2>&1 || continue
        virsh -q -c qemu:///system pool-destroy "$p" >/dev/null 2>&1
        virsh -q -c qemu:///system pool-undefine "$p" >/dev/null 2>&1
    done
}
