#!/usr/bin/env bash
# Instructions per Process call (create, list), counted by callgrind: unlike wall time, the same on
# every run of the same binary, so it shows the plugin's own cost without the VM's timing noise.
# The per-call figure is the difference between a 20k-call and a 10k-call run, divided by 10k, so
# loading and setup cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "process_instructions.sh: needs valgrind" >&2; exit 1; }
cargo bench -p controller --bench process --no-run 2>/dev/null
bench=$(ls -t target/release/deps/process-* | grep -v '\.d$' | head -1)
count() {
  BENCH_PROFILE="$1" BENCH_PROFILE_CALLS="$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$bench" --bench 2>&1 | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}
for which in create list; do
  small=$(count "$which" 10000)
  large=$(count "$which" 20000)
  echo "$which: $(( (large - small) / 10000 )) instructions per Process call"
done
