#!/usr/bin/env bash
# Runs every test against throwaway PostgreSQL and Redis servers, started fresh for this run
# on their own ports (so a `make up` system keeps running undisturbed) and stopped on exit,
# whether the tests pass or not.
#
#   scripts/test.sh [extra cargo test arguments]
#
# Then checks the Prometheus alert rules and runs their unit tests with promtool.
# Environment: TEST_PG_PORT [55433], TEST_REDIS_PORT [56380].
# The tests get DATABASE_URL, REDIS_URL and SMTP_SINK (the path of scripts/smtp_sink.py, an
# SMTP server that stores mail as files; see its header for its arguments).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export DATA_DIR="$REPO/target/test-services"
export PG_PORT="${TEST_PG_PORT:-55433}"
export REDIS_PORT="${TEST_REDIS_PORT:-56380}"
SERVICES="$REPO/scripts/services.sh"

log() { printf '[test] %s\n' "$*" >&2; }

# Wipe what an earlier run left, stopping its servers if it was cut short.
"$SERVICES" clean

stop_services() { "$SERVICES" down || true; }
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$SERVICES" deps --test
"$SERVICES" up

export DATABASE_URL="postgres://booking:booking@127.0.0.1:$PG_PORT/booking"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export SMTP_SINK="$REPO/scripts/smtp_sink.py"
# Values from a developer's shell must not leak into the tests.
unset API_ADDR WORKER_METRICS_ADDR OUTBOX_DIR SMTP_URL API_URL

failed=()

log "cargo test --workspace --all-targets $*"
cargo test --workspace --all-targets "$@" || failed+=("cargo test")

if [[ -f monitoring/alerts.yml ]]; then
    log "promtool check rules monitoring/alerts.yml"
    promtool check rules monitoring/alerts.yml || failed+=("promtool check rules")
fi
if [[ -f monitoring/alerts_test.yml ]]; then
    log "promtool test rules monitoring/alerts_test.yml"
    # promtool resolves rule_files relative to the test file's folder.
    promtool test rules monitoring/alerts_test.yml || failed+=("promtool test rules")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all passed"
