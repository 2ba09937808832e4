#!/usr/bin/env bash
# Starts and stops the two stores the booking service needs, PostgreSQL and Redis, as plain
# local processes with their data under one project-local folder. No Docker, no system
# services: the Debian packages are only used for their binaries (and installed when missing).
#
#   scripts/services.sh up        install missing packages, start both, create role and database
#   scripts/services.sh down      stop both (data is kept)
#   scripts/services.sh status    show whether each one answers; exit 0 only if both do
#   scripts/services.sh clean     stop both and delete their data
#   scripts/services.sh postgres-stop | postgres-start | redis-kill | redis-start
#                                 one server alone, for the fault drill: a fast PostgreSQL
#                                 shutdown and a start; Redis killed with SIGKILL (no
#                                 shutdown, only what the append-only file holds survives)
#                                 and a start
#   scripts/services.sh deps [--test]
#                                 only install missing packages (servers, curl, make); --test
#                                 adds the test tools (promtool from `prometheus`,
#                                 python3-aiosmtpd)
#
# Environment (defaults in brackets):
#   DATA_DIR   [$REPO/.data]  holds pg/, redis/, logs/, run/
#   PG_PORT    [55432]        PostgreSQL, listening on 127.0.0.1 only
#   REDIS_PORT [56379]        Redis, listening on 127.0.0.1 only
#   PG_BIN     [newest /usr/lib/postgresql/*/bin]
#
# Layout under DATA_DIR:
#   pg/data       the cluster (PGDATA), owned by the user the server runs as
#   pg/sock       the server's unix socket directory
#   pg/postgres.log  server log (linked from logs/postgres.log)
#   redis/        Redis append-only file and snapshots
#   logs/         redis.log, postgres.log
#   run/          redis.pid
#
# The PostgreSQL server refuses to run as root. When this script runs as root, the server runs
# as the `postgres` system user; otherwise it runs as the invoking user. The postgres user must
# be able to traverse every folder down to DATA_DIR: that fails when the repository lives under
# /root (mode 700). In that case the pg/ folder is placed at /var/tmp/booking-pg-<hash of
# DATA_DIR> instead and DATA_DIR/pg is a symlink to it, so both `down` and `clean` still find it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$REPO/.data}"
PG_PORT="${PG_PORT:-55432}"
REDIS_PORT="${REDIS_PORT:-56379}"
PG_SUPERUSER=postgres
DB_NAME=booking
DB_USER=booking
DB_PASSWORD=booking
READY_TIMEOUT_SECONDS=60

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"
REDIS_DIR="$DATA_DIR/redis"
REDIS_PIDFILE="$RUN_DIR/redis.pid"

if [[ "$(id -u)" -eq 0 ]]; then
    AS_ROOT=1
    SUDO=()
else
    AS_ROOT=0
    SUDO=(sudo)
fi

# ---------------------------------------------------------------------------------------------
# Packages

find_pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        [[ -x "$PG_BIN/initdb" ]] && printf '%s\n' "$PG_BIN"
        return 0
    fi
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$dir" && -x "$dir/initdb" ]] && printf '%s\n' "$dir"
    return 0
}

# The extension files of the server version in use; btree_gist backs the exclusion constraint.
has_btree_gist() {
    local bin version
    bin="$(find_pg_bin)"
    [[ -n "$bin" ]] || return 1
    version="$(basename "$(dirname "$bin")")"
    [[ -f "/usr/share/postgresql/$version/extension/btree_gist.control" ]]
}

aiosmtpd_missing() { ! /usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1; }

missing_packages() {
    local with_test_tools="$1"
    local -a missing=()
    [[ -n "$(find_pg_bin)" ]] || missing+=(postgresql)
    has_btree_gist 2>/dev/null || missing+=(postgresql-contrib)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v curl >/dev/null || missing+=(curl)
    command -v make >/dev/null || missing+=(make)
    if [[ "$with_test_tools" == 1 ]]; then
        command -v promtool >/dev/null || missing+=(prometheus)
        aiosmtpd_missing && missing+=(python3-aiosmtpd)
    fi
    printf '%s\n' "${missing[@]}"
}

# Installs what is missing. The packages' own system services (a `main` cluster on 5432, a
# redis on 6379, a prometheus on 9090) are kept from starting with a temporary policy-rc.d
# when the machine has none: this project runs its own instances on its own ports.
install_packages() {
    local with_test_tools="${1:-0}"
    local -a packages
    mapfile -t packages < <(missing_packages "$with_test_tools")
    [[ ${#packages[@]} -gt 0 && -n "${packages[0]}" ]] || return 0

    log "installing missing packages: ${packages[*]}"
    if [[ $AS_ROOT -eq 0 ]] && ! command -v sudo >/dev/null; then
        die "not root and no sudo: install ${packages[*]} by hand"
    fi
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        created_policy=1
    fi
    local status=0
    {
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "${packages[@]}"
    } </dev/null || status=$?
    [[ $created_policy -eq 1 ]] && "${SUDO[@]}" rm -f "$policy"
    [[ $status -eq 0 ]] || die "apt-get failed (exit $status)"

    [[ -n "$(find_pg_bin)" ]] || die "PostgreSQL binaries still not found under /usr/lib/postgresql"
    has_btree_gist || die "btree_gist extension files still missing"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

# Runs a command as the user the server runs as, from a folder that user can read.
as_pg() {
    if [[ $AS_ROOT -eq 1 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Where pg/ really lives (see the header): DATA_DIR/pg, or a /var/tmp folder it links to.
pg_root() {
    if [[ -L "$DATA_DIR/pg" ]]; then
        readlink "$DATA_DIR/pg"
    else
        printf '%s\n' "$DATA_DIR/pg"
    fi
}

prepare_pg_root() {
    if [[ -L "$DATA_DIR/pg" ]]; then
        mkdir -p "$(readlink "$DATA_DIR/pg")"
        return 0
    fi
    [[ -d "$DATA_DIR/pg" ]] && return 0
    if [[ $AS_ROOT -eq 1 ]] && ! runuser -u postgres -- test -x "$DATA_DIR" 2>/dev/null; then
        local hash fallback
        hash="$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-12)"
        fallback="/var/tmp/booking-pg-$hash"
        log "postgres cannot reach $DATA_DIR; its data goes to $fallback (linked as $DATA_DIR/pg)"
        mkdir -p "$fallback"
        ln -s "$fallback" "$DATA_DIR/pg"
    else
        mkdir -p "$DATA_DIR/pg"
    fi
}

pg_paths() {
    PG_ROOT="$(pg_root)"
    PGDATA="$PG_ROOT/data"
    PG_SOCK="$PG_ROOT/sock"
    PG_LOG="$PG_ROOT/postgres.log"
}

pg_running() {
    [[ -n "$(find_pg_bin)" && -f "$PGDATA/PG_VERSION" ]] || return 1
    as_pg "$(find_pg_bin)/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

pg_init() {
    local bin="$1"
    mkdir -p "$PG_ROOT" "$PG_SOCK"
    [[ $AS_ROOT -eq 1 ]] && chown -R postgres:postgres "$PG_ROOT"
    chmod 700 "$PG_ROOT" "$PG_SOCK"

    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        log "initdb $PGDATA"
        as_pg "$bin/initdb" -D "$PGDATA" -U "$PG_SUPERUSER" --auth=trust \
            --encoding=UTF8 --no-locale >/dev/null
        echo "include 'booking.conf'" >>"$PGDATA/postgresql.conf"
    fi

    # Trust, but only over the private socket and loopback; the server listens nowhere else.
    cat >"$PGDATA/pg_hba.conf" <<EOF
# Written by scripts/services.sh: development and test cluster, trust on loopback only.
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
EOF
    # Rewritten on every start so a changed PG_PORT or DATA_DIR takes effect.
    cat >"$PGDATA/booking.conf" <<EOF
# Written by scripts/services.sh on every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
fsync = on
EOF
    [[ $AS_ROOT -eq 1 ]] && chown postgres:postgres "$PGDATA/pg_hba.conf" "$PGDATA/booking.conf"
    ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
}

wait_for_pg() {
    local bin="$1" deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$PG_LOG" >&2 || true
            die "PostgreSQL not ready on 127.0.0.1:$PG_PORT after ${READY_TIMEOUT_SECONDS}s"
        fi
        sleep 0.5
    done
}

pg_psql() {
    local bin="$1" db="$2"
    shift 2
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" -d "$db" "$@"
}

pg_up() {
    local bin
    bin="$(find_pg_bin)"
    prepare_pg_root
    pg_paths
    if pg_running; then
        log "PostgreSQL already running ($PGDATA)"
    else
        pg_init "$bin"
        log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        if ! as_pg "$bin/pg_ctl" start -D "$PGDATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT_SECONDS" \
            >/dev/null; then
            tail -n 20 "$PG_LOG" >&2 || true
            die "PostgreSQL failed to start (is port $PG_PORT taken?); log: $PG_LOG"
        fi
    fi
    wait_for_pg "$bin"

    # Role and database, created once; the password is reset so a changed one is repaired.
    # The services' role is not a superuser: superusers bypass row-level security. It may
    # create databases (each test makes its own) and owns the one it uses.
    pg_psql "$bin" postgres <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE $DB_USER LOGIN NOSUPERUSER CREATEDB PASSWORD '$DB_PASSWORD';
    ELSE
        ALTER ROLE $DB_USER LOGIN NOSUPERUSER CREATEDB PASSWORD '$DB_PASSWORD';
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')
\gexec
SQL
    # The migrations need btree_gist; check it can be created, without leaving it behind
    # (CREATE EXTENSION is transactional), so the migrations stay the only schema change.
    pg_psql "$bin" "$DB_NAME" -c 'BEGIN; CREATE EXTENSION IF NOT EXISTS btree_gist; ROLLBACK;' \
        >/dev/null || die "CREATE EXTENSION btree_gist fails: install postgresql-contrib"
}

pg_down() {
    pg_paths
    local bin
    bin="$(find_pg_bin)"
    if pg_running; then
        log "stopping PostgreSQL"
        as_pg "$bin/pg_ctl" stop -D "$PGDATA" -m fast -w -t "$READY_TIMEOUT_SECONDS" >/dev/null
    else
        log "PostgreSQL not running"
    fi
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_pid() {
    local pid
    [[ -f "$REDIS_PIDFILE" ]] || return 1
    pid="$(cat "$REDIS_PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

redis_answers() { [[ "$(redis_cli ping 2>/dev/null)" == PONG ]]; }

redis_up() {
    mkdir -p "$REDIS_DIR" "$LOG_DIR" "$RUN_DIR"
    if redis_pid >/dev/null; then
        log "Redis already running (pid $(redis_pid))"
    else
        redis_answers && die "something else answers on 127.0.0.1:$REDIS_PORT"
        rm -f "$REDIS_PIDFILE"
        log "starting Redis on 127.0.0.1:$REDIS_PORT"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
            --protected-mode yes --appendonly yes --appendfsync everysec \
            --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$LOG_DIR/redis.log" \
            </dev/null
    fi
    local deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    until redis_answers; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$LOG_DIR/redis.log" >&2 || true
            die "Redis not answering on 127.0.0.1:$REDIS_PORT after ${READY_TIMEOUT_SECONDS}s"
        fi
        sleep 0.2
    done
}

redis_down() {
    local pid
    if ! pid="$(redis_pid)"; then
        log "Redis not running"
        rm -f "$REDIS_PIDFILE"
        return 0
    fi
    log "stopping Redis (pid $pid)"
    # The append-only file is flushed on shutdown either way; NOSAVE skips the extra snapshot.
    redis_cli shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "Redis did not stop in 20s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$REDIS_PIDFILE"
}

# ---------------------------------------------------------------------------------------------

print_urls() {
    echo "DATABASE_URL=postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
    echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
}

cmd_up() {
    install_packages 0
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    pg_up
    redis_up
    log "PostgreSQL data: $PGDATA, log: $LOG_DIR/postgres.log"
    log "Redis data: $REDIS_DIR, log: $LOG_DIR/redis.log"
    print_urls
}

cmd_down() {
    redis_down
    if [[ -n "$(find_pg_bin)" ]]; then pg_down; fi
}

cmd_status() {
    local ok=0
    pg_paths
    if pg_running && "$(find_pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
        echo "postgres: running on 127.0.0.1:$PG_PORT (data $PGDATA)"
    else
        echo "postgres: not running"
        ok=3
    fi
    if redis_pid >/dev/null && redis_answers; then
        echo "redis:    running on 127.0.0.1:$REDIS_PORT (pid $(redis_pid), data $REDIS_DIR)"
    else
        echo "redis:    not running"
        ok=3
    fi
    print_urls
    return $ok
}

cmd_clean() {
    cmd_down
    local root
    root="$(pg_root)"
    if [[ "$root" != "$DATA_DIR/pg" ]]; then rm -rf "$root"; fi
    log "removing $DATA_DIR"
    rm -rf "$DATA_DIR"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    postgres-stop) pg_down ;;
    postgres-start) pg_up ;;
    redis-kill)
        if pid="$(redis_pid)"; then
            log "killing Redis (pid $pid) with SIGKILL"
            kill -KILL "$pid"
            while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        fi
        rm -f "$REDIS_PIDFILE"
        ;;
    redis-start) redis_up ;;
    deps)
        if [[ "${2:-}" == --test ]]; then install_packages 1; else install_packages 0; fi
        ;;
    *)
        echo "usage: $0 up|down|status|clean|postgres-stop|postgres-start|redis-kill|redis-start|deps [--test]" >&2
        exit 2
        ;;
esac
