#!/usr/bin/env bash
# Runs every test of the repository: unit and integration tests of all workspace crates (the plugin is
# driven through dlopen of the freshly built libcontroller.so), then the demo as a smoke test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (workspace)"
cargo test --workspace --all-targets "$@"

echo "== demo"
scripts/demo.sh >/dev/null
echo "demo: ok"
