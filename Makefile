# The booking service on this machine: real PostgreSQL and Redis as local processes (see
# scripts/services.sh), the api and worker release binaries in the background.
#
#   make up      start everything, migrate, seed the demo tenants, run the demo (unless DEMO=0)
#   make demo    run the demo traffic again
#   make down    stop everything (data under DATA_DIR is kept)
#   make status  what is running
#   make test    every test, against throwaway services (scripts/test.sh)
#   make drill   every fault against the real processes, one line each (scripts/drill.sh)
#   make bench   read-path throughput and latency with wrk, after make up (scripts/bench.sh)
#   make fmt     check formatting; make lint: clippy with warnings as errors
#
# Every setting comes from the environment or the command line (`make up API_ADDR=...`);
# the application's own variables (APP_ENV, BASE_DOMAIN, SMTP_URL, RATE_LIMIT_*, ...) pass
# through to the api and worker untouched. Those set here, with their defaults:

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

DATA_DIR ?= .data
override DATA_DIR := $(abspath $(DATA_DIR))
PG_PORT ?= 55432
REDIS_PORT ?= 56379
DATABASE_URL ?= postgres://booking:booking@127.0.0.1:$(PG_PORT)/booking
REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)
OUTBOX_DIR ?= $(DATA_DIR)/outbox
API_ADDR ?= 127.0.0.1:8080
WORKER_METRICS_ADDR ?= 127.0.0.1:9091
API_URL ?= http://$(API_ADDR)
# Arguments that make the api binary serve HTTP.
API_SERVE_ARGS ?= serve
# DEMO=0 skips the demo traffic in `make up`.
DEMO ?= 1

export DATA_DIR PG_PORT REDIS_PORT DATABASE_URL REDIS_URL OUTBOX_DIR API_ADDR \
	WORKER_METRICS_ADDR API_URL API_SERVE_ARGS

RELEASE := target/release

.PHONY: help up demo down status test drill bench fmt lint

help:
	@sed -n '4,11s/^#  //p' $(firstword $(MAKEFILE_LIST))

up:
	scripts/services.sh up
	cargo build --release --bins
	$(RELEASE)/api migrate
	$(RELEASE)/api seed-demo
	scripts/demo_keys.sh $(RELEASE)/api
	mkdir -p "$(OUTBOX_DIR)"
	scripts/app.sh start
	if [[ "$(DEMO)" != 0 ]]; then $(RELEASE)/demo; fi
	@echo
	@echo "api:            $(API_URL)   (metrics $(API_URL)/metrics)"
	@echo "worker metrics: http://$(WORKER_METRICS_ADDR)/metrics"
	@echo "logs:           $(DATA_DIR)/logs/api.log, worker.log, postgres.log, redis.log"
	@if [[ -n "$${SMTP_URL:-}" ]]; then echo "mail:           sent to SMTP_URL"; \
	else echo "outbox:         $(OUTBOX_DIR) (one .eml file per message)"; fi
	@echo "DATABASE_URL=$(DATABASE_URL)"
	@echo "REDIS_URL=$(REDIS_URL)"

demo:
	@[[ -x $(RELEASE)/demo ]] || { echo "no $(RELEASE)/demo: run make up first" >&2; exit 1; }
	$(RELEASE)/demo

down:
	scripts/app.sh stop
	scripts/services.sh down

status:
	scripts/app.sh status || true
	scripts/services.sh status || true

test:
	scripts/test.sh

drill:
	scripts/drill.sh

bench:
	scripts/bench.sh

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings
