#!/usr/bin/env bash
# Start or stop the libvirt daemons stratus needs, without systemd.
#
#   scripts/services.sh start STARTED_FILE   start virtlogd and libvirtd unless
#                                            they run; list the ones started
#                                            (name pid) in STARTED_FILE
#   scripts/services.sh stop STARTED_FILE    stop only those listed, then
#                                            remove the file
#   scripts/services.sh status
#
# Daemons that were already running are left alone, so a test run beside
# `make run` (or a host's own libvirtd) never stops somebody else's daemon.
set -euo pipefail

URI=qemu:///system
WAIT_S=${STRATUS_SERVICES_WAIT_S:-30}

log() { echo "services: $*" >&2; }

# pid of a running daemon, from its pid file or the process table
daemon_pid() {
    local name=$1 pid
    pid=$(cat "/run/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        echo "$pid"
        return 0
    fi
    pgrep -x "$name" | head -n1
}

libvirt_answers() {
    timeout 5 virsh -q -c "$URI" version >/dev/null 2>&1
}

start_one() {
    local name=$1 file=$2 pid
    if pid=$(daemon_pid "$name") && [ -n "$pid" ]; then
        return 0
    fi
    mkdir -p /run/libvirt /var/log/libvirt
    "$name" -d
    for _ in $(seq 1 50); do
        pid=$(daemon_pid "$name" || true)
        [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || { log "$name did not start"; return 1; }
    echo "$name $pid" >>"$file"
    log "started $name (pid $pid)"
}

start() {
    local file=$1 i
    mkdir -p "$(dirname "$file")"
    touch "$file"
    start_one virtlogd "$file"
    start_one libvirtd "$file"
    for ((i = 0; i < WAIT_S * 2; i++)); do
        libvirt_answers && return 0
        sleep 0.5
    done
    log "libvirtd does not answer on $URI after ${WAIT_S}s (see /var/log/libvirt/)"
    return 1
}

stop() {
    local file=$1 name pid i
    [ -f "$file" ] || return 0
    # libvirtd first, virtlogd last: libvirtd talks to virtlogd.
    tac "$file" | while read -r name pid; do
        [ -n "$pid" ] || continue
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null
        log "stopped $name (pid $pid)"
    done
    rm -f "$file"
}

case "${1:-}" in
start) start "${2:?STARTED_FILE}" ;;
stop) stop "${2:?STARTED_FILE}" ;;
status)
    for n in virtlogd libvirtd; do
        echo "$n: $(daemon_pid "$n" || echo not running)"
    done
    libvirt_answers && echo "$URI: answers" || echo "$URI: no answer"
    ;;
*)
    echo "usage: $0 start|stop STARTED_FILE | status" >&2
    exit 2
    ;;
esac
