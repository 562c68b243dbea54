#!/usr/bin/env bash
# Runs every test of the repository: unit and integration tests of all workspace crates (the plugin
# is driven through dlopen of the freshly built libcontroller.so, from Rust and from the C host
# harness in tests/harness/, also under valgrind; wsm's tests start their own redis-server on free
# ports and the local feed server; tests/fuzz_corpus.rs replays the committed fuzz corpus on stable),
# then the demo as a smoke test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests run for real: redis-server (the Redis-backed tests start their own, never a
# shared one), valgrind (the C host harness's leak check), a C compiler (the harness itself) and curl
# (the demo's readiness check).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: ${missing[*]} not installed and cannot be installed here (needs root and apt-get);" \
         "install them and run again" >&2
    exit 1
  fi
fi

echo "== cargo test (workspace)"
cargo test --workspace --all-targets "$@"

echo "== demo"
scripts/demo.sh >/dev/null
echo "demo: ok"
