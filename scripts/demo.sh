#!/usr/bin/env bash
# The main job, at this stage of the project: build the controller plugin in release mode, load it
# through dlopen as WorkManager would, and drive one worker through create → subscribe → publish →
# list → stop against a scripted gateway. Exits non-zero if any step replies unexpectedly.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q -p controller
lib="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/libcontroller.so"
CONTROLLER_LIB="$lib" cargo run --release -q -p controller --example demo
