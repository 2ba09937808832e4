#!/usr/bin/env bash
# The fault drill: builds the api, worker and drill binaries, starts the drill's own
# PostgreSQL and Redis (never the ones `make up` or `make test` use), and runs every fault
# against the real processes, printing one line per fault. Stops its servers on exit.
#
#   scripts/drill.sh                 every fault
#   DRILL_FAULTS=redis-restart,sigterm scripts/drill.sh
#
# Environment: DRILL_PG_PORT [55541], DRILL_REDIS_PORT [56491], DRILL_PROFILE [debug|release],
# DRILL_LOG [info]: the RUST_LOG filter of the api and worker processes.
# Logs of every api and worker process: target/drill/run/<fault>/{api,worker}.log; every refusal
# a retrying drill client met, with its time: target/drill/run/<fault>/answers.log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export DRILL_PG_PORT="${DRILL_PG_PORT:-55541}"
export DRILL_REDIS_PORT="${DRILL_REDIS_PORT:-56491}"
export DRILL_DATA_DIR="$REPO/target/drill/services"
PROFILE="${DRILL_PROFILE:-debug}"
export DRILL_BIN_DIR="$REPO/target/$PROFILE"

services() {
    DATA_DIR="$DRILL_DATA_DIR" PG_PORT="$DRILL_PG_PORT" REDIS_PORT="$DRILL_REDIS_PORT" \
        "$REPO/scripts/services.sh" "$@"
}

log() { printf '[drill] %s\n' "$*" >&2; }

cargo_flags=()
[[ "$PROFILE" == release ]] && cargo_flags+=(--release)
log "building api, worker and drill ($PROFILE)"
cargo build "${cargo_flags[@]}" -p api -p worker -p drill --bins

services clean >/dev/null 2>&1 || true
trap 'services down >/dev/null 2>&1 || true' EXIT
services deps --test
services up >/dev/null
log "PostgreSQL on $DRILL_PG_PORT, Redis on $DRILL_REDIS_PORT; running the faults"
"$DRILL_BIN_DIR/drill"
