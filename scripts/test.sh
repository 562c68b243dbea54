#!/usr/bin/env bash
# Runs every test of the repository: unit and integration tests of all workspace crates (the plugin
# is driven through dlopen of the freshly built libcontroller.so; wsm's tests start their own
# redis-server on free ports and the local feed server), then the demo as a smoke test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# The Redis-backed tests start their own redis-server (never a shared one); install it if missing.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "test.sh: redis-server is not installed and cannot be installed here (needs root and apt-get);" \
         "install Redis 7 and run again" >&2
    exit 1
  fi
fi

echo "== cargo test (workspace)"
cargo test --workspace --all-targets "$@"

echo "== demo"
scripts/demo.sh >/dev/null
echo "demo: ok"
