#!/usr/bin/env bash
# Read-path throughput and latency with wrk, against the system `make up` started: a second api
# process on BENCH_ADDR shares its PostgreSQL and Redis, with the per-client rate limits raised
# so that wrk measures the service and not the limiter. Prints wrk's figures for each route;
# asserts nothing (speed is measured here, never in a test).
#
#   scripts/bench.sh            (after make up)
#
# Environment: DATABASE_URL, REDIS_URL (as make exports them), BENCH_ADDR [127.0.0.1:8089],
# BENCH_SECONDS [10], BENCH_CONNECTIONS [8], API_BIN [target/release/api],
# BENCH_TENANT [demo-london].
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ADDR="${BENCH_ADDR:-127.0.0.1:8089}"
SECONDS_EACH="${BENCH_SECONDS:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-8}"
API_BIN="${API_BIN:-$REPO/target/release/api}"
TENANT="${BENCH_TENANT:-demo-london}"
BASE="http://$ADDR/t/$TENANT"

log() { printf '[bench] %s\n' "$*" >&2; }

command -v wrk >/dev/null || { log "wrk is missing: apt-get install wrk"; exit 1; }
[[ -x "$API_BIN" ]] || { log "no $API_BIN: run make up first (or set API_BIN)"; exit 1; }

RATE_LIMIT_READS_PER_MINUTE=100000000 RATE_LIMIT_BOOKINGS_PER_MINUTE=100000000 \
    API_ADDR="$ADDR" RUST_LOG=warn "$API_BIN" serve >/dev/null 2>&1 &
api=$!
trap 'kill "$api" 2>/dev/null || true; wait "$api" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://$ADDR/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://$ADDR/readyz" >/dev/null || { log "the bench api did not become ready"; exit 1; }

service="$(curl -fs "$BASE/v1/services" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
day="$(date -u -d '+20 days' +%F)"
week_end="$(date -u -d '+26 days' +%F)"

run() { # label url
    local label="$1" url="$2" out
    out="$(wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_EACH}s" --latency "$url")"
    local rps p50 p99 non2xx
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
    printf '%-28s %10s req/s   p50 %-9s p99 %-9s non-2xx %s\n' \
        "$label" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "wrk, 2 threads, $CONNECTIONS connections, ${SECONDS_EACH}s per route, tenant $TENANT"
run "GET /v1/services" "$BASE/v1/services"
run "GET /v1/availability 1 day" "$BASE/v1/availability?service_id=$service&from=$day&to=$day"
run "GET /v1/availability 7 days" "$BASE/v1/availability?service_id=$service&from=$day&to=$week_end"
run "GET /healthz" "http://$ADDR/healthz"
