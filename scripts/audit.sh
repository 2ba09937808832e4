#!/usr/bin/env bash
# Audits the dependency tree offline: known vulnerabilities, unmaintained and unsound crates
# (RustSec advisory database), licenses, duplicate and wildcard dependencies, and crate sources.
# Exits non-zero on any finding that deny.toml does not allow.
#
#   scripts/audit.sh
#
# These machines cannot reach the advisory database's home, so it comes from a git bundle kept
# beside the repository, at ../shared/advisory-db.bundle. The script:
#   1. installs cargo-deny and cargo-audit with `cargo install --locked` when they are missing
#      or, for cargo-deny, not of the series deny.toml is written for. Each build takes minutes
#      (on two cores, built side by side: 14 minutes for cargo-deny, 20 for cargo-audit);
#   2. clones the bundle afresh into target/advisory-db/advisory-db-3157b0e258782691, the
#      folder cargo-deny looks for under deny.toml's db-path (it names the clone after a hash of
#      the database's default URL);
#   3. runs `cargo fetch` (cargo-deny reads every crate's manifest, and runs offline), then
#      `cargo deny --offline check` and `cargo audit --no-fetch` against that clone.
#
# Advisories ignored in deny.toml (`{ id = "RUSTSEC-...", reason = "..." }`) are passed on to
# cargo-audit, so the two tools agree. Neither tool asks the registry about yanked crates here:
# both only read cargo's local index cache.
#
# Environment: ADVISORY_DB_BUNDLE [$REPO/../shared/advisory-db.bundle].
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

BUNDLE="${ADVISORY_DB_BUNDLE:-$REPO/../shared/advisory-db.bundle}"
DB_DIR="$REPO/target/advisory-db/advisory-db-3157b0e258782691"
# deny.toml uses keys of this cargo-deny series; other series rename or remove keys.
CARGO_DENY_SERIES=0.20
# cargo-deny refuses a database older than this (maximum-db-staleness) but dates it by the
# clone, which is always fresh here; so the script dates it by its last commit, and warns.
MAX_DB_AGE_DAYS=90

log() { printf '[audit] %s\n' "$*" >&2; }
die() { printf '[audit] error: %s\n' "$*" >&2; exit 1; }

installed_version() { # cargo subcommand -> its version, or nothing
    cargo "$1" --version 2>/dev/null | awk '{ print $NF }' || true
}

install_tools() {
    local deny audit
    deny="$(installed_version deny)"
    if [[ "$deny" == "$CARGO_DENY_SERIES".* ]]; then
        log "cargo-deny $deny already installed"
    else
        log "installing cargo-deny $CARGO_DENY_SERIES.x (installed: ${deny:-none})"
        cargo install --locked cargo-deny --version "~$CARGO_DENY_SERIES" </dev/null
    fi

    audit="$(installed_version audit)"
    if [[ -n "$audit" ]]; then
        log "cargo-audit $audit already installed"
    else
        log "installing cargo-audit"
        cargo install --locked cargo-audit </dev/null
    fi
}

clone_advisory_db() {
    [[ -f "$BUNDLE" ]] || die "no advisory database bundle at $BUNDLE"
    rm -rf "$DB_DIR" "$DB_DIR.new"
    mkdir -p "$(dirname "$DB_DIR")"
    git -c init.defaultBranch=main clone --quiet "$BUNDLE" "$DB_DIR.new"
    mv "$DB_DIR.new" "$DB_DIR"

    local commit commit_date age_days
    read -r commit commit_date < <(git -C "$DB_DIR" show -s --format='%h %cI' HEAD)
    age_days=$(( ($(date +%s) - $(date -d "$commit_date" +%s)) / 86400 ))
    log "advisory database: commit $commit of $commit_date ($age_days days old)"
    if (( age_days > MAX_DB_AGE_DAYS )); then
        log "warning: the advisory database is older than $MAX_DB_AGE_DAYS days;" \
            "advisories published since then are not checked. Refresh $BUNDLE."
    fi
}

ignored_advisories() { # the ids deny.toml ignores, as cargo-audit arguments
    sed -nE 's/.*id *= *"(RUSTSEC-[0-9]+-[0-9]+)".*/--ignore\n\1/p' deny.toml
}

install_tools
clone_advisory_db

log "cargo fetch"
cargo fetch

# Without its inclusion graphs, cargo-deny names each crate it reports in a line or two. To see
# which dependency pulls one in: `cargo deny --offline check` from the repository root.
log "cargo deny --offline check"
cargo deny --offline check --hide-inclusion-graph --show-stats advisories bans licenses sources

log "cargo audit --no-fetch --db $DB_DIR"
mapfile -t ignore_args < <(ignored_advisories)
cargo audit --no-fetch --db "$DB_DIR" "${ignore_args[@]}"
