#!/usr/bin/env bash
# Issues an admin API key for each demo tenant, once, and keeps them in
# $DATA_DIR/admin-keys (mode 600: readable only by its owner). Prints the keys.
#
#   scripts/demo_keys.sh [path to the api binary]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$REPO/.data}"
API_BIN="${1:-$REPO/target/release/api}"
KEYS="$DATA_DIR/admin-keys"

umask 077
mkdir -p "$DATA_DIR"
touch "$KEYS"
chmod 600 "$KEYS"

# A line is "<slug> <key>"; anything else (a line left by an older version, say) is dropped
# and its tenant gets a new key.
KEY_LINE='^demo-[a-z]+ bk_[0-9a-f]{12}_[0-9a-f]{64}$'
grep -E "$KEY_LINE" "$KEYS" >"$KEYS.new" || true
mv "$KEYS.new" "$KEYS"

for slug in demo-london demo-newyork demo-sydney; do
    if ! grep -q "^$slug " "$KEYS"; then
        key="$("$API_BIN" key issue "$slug" --name demo 2>/dev/null)"
        if ! [[ "$slug $key" =~ $KEY_LINE ]]; then
            echo "demo_keys: the api printed something other than a key for $slug" >&2
            exit 1
        fi
        printf '%s %s\n' "$slug" "$key" >>"$KEYS"
    fi
done

echo "admin API keys (also in $KEYS, mode 600):"
sed 's/^/  /' "$KEYS"
