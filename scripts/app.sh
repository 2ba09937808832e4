#!/usr/bin/env bash
# Runs the two release binaries, api and worker, as background processes for `make up`
# and `make down`. Expects the environment `make` exports (see the Makefile).
#
#   scripts/app.sh start    (re)start api and worker, then wait until the api is ready
#   scripts/app.sh stop     stop both: SIGTERM, then SIGKILL after a bounded wait
#   scripts/app.sh status   show which of them run
#
# Logs go to $DATA_DIR/logs/{api,worker}.log (appended), pid files to $DATA_DIR/run/.
# API_SERVE_ARGS (default `serve`) are the api's arguments for serving HTTP.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$REPO/.data}"
API_ADDR="${API_ADDR:-127.0.0.1:8080}"
API_SERVE_ARGS="${API_SERVE_ARGS:-serve}"
BIN_DIR="${BIN_DIR:-$REPO/target/release}"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"
READY_TIMEOUT_SECONDS="${READY_TIMEOUT_SECONDS:-60}"
STOP_TIMEOUT_SECONDS=20

log() { printf '[app] %s\n' "$*" >&2; }
die() { printf '[app] error: %s\n' "$*" >&2; exit 1; }

pidfile() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

# The pid of a running process named in the pid file, if that pid is still that binary
# (a stale file whose pid was reused by something else does not count).
running_pid() {
    local name="$1" file pid
    file="$(pidfile "$name")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$BIN_DIR/$name" || return 1
    printf '%s\n' "$pid"
}

stop_one() {
    local name="$1" pid
    if ! pid="$(running_pid "$name")"; then
        rm -f "$(pidfile "$name")"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT_SECONDS))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name did not stop in ${STOP_TIMEOUT_SECONDS}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$(pidfile "$name")"
}

start_one() {
    local name="$1"
    shift
    [[ -x "$BIN_DIR/$name" ]] || die "$BIN_DIR/$name missing: run cargo build --release --bins"
    log "starting $name, log $LOG_DIR/$name.log"
    # Started from the repository root, in a session of its own (a Ctrl-C aimed at make or the
    # demo does not reach it) and detached from make's output.
    (cd "$REPO" && exec setsid nohup "$BIN_DIR/$name" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null) &
    echo $! >"$(pidfile "$name")"
}

died() {
    local name="$1"
    log "$name exited; last lines of $LOG_DIR/$name.log:"
    tail -n 30 "$LOG_DIR/$name.log" >&2 || true
    exit 1
}

wait_until_ready() {
    local url="http://$API_ADDR/readyz" deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    log "waiting for $url"
    sleep 0.5
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" == 200 ]]; do
        running_pid api >/dev/null || died api
        running_pid worker >/dev/null || died worker
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOG_DIR/api.log" >&2 || true
            die "api not ready at $url after ${READY_TIMEOUT_SECONDS}s"
        fi
        sleep 0.5
    done
    running_pid worker >/dev/null || died worker
    log "api ready at http://$API_ADDR"
}

cmd_start() {
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    stop_one api
    stop_one worker
    # shellcheck disable=SC2086 # API_SERVE_ARGS is a word list on purpose
    start_one api $API_SERVE_ARGS
    start_one worker
    wait_until_ready
}

cmd_stop() {
    stop_one api
    stop_one worker
}

cmd_status() {
    local name pid ok=0
    for name in api worker; do
        if pid="$(running_pid "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            ok=3
        fi
    done
    return $ok
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
