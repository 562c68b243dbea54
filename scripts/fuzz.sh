#!/usr/bin/env bash
# Runs a cargo-fuzz target (libFuzzer, nightly) on its committed corpus; see docs/fuzzing.md.
# Usage: scripts/fuzz.sh [process|correlation|all] [seconds]   (defaults: all, 600 s per target)
#        scripts/fuzz.sh cmin [process|correlation|all]         minimise the committed corpus
#
# One process and one worker at a time (-jobs=1 -workers=1), so the run leaves the other core free.
# New inputs land in fuzz/corpus/<target>/; a crash is written to fuzz/artifacts/<target>/ and this
# script exits non-zero. The run's log (libFuzzer writes it to fuzz-0.log with -jobs) is kept in
# $FUZZ_LOG_DIR (default: a temporary directory) and its last status line is printed.
# Environment: FUZZ_TARGET_DIR (cargo's target dir for the instrumented build; default fuzz/target),
# FUZZ_LOG_DIR, and extra libFuzzer flags in FUZZ_FLAGS (e.g. "-max_len=8192").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=run
if [ "${1:-}" = cmin ]; then
  mode=cmin
  shift
fi
target=${1:-all}
seconds=${2:-600}
case "$target" in
  all) targets=(process correlation) ;;
  process | correlation) targets=("$target") ;;
  *) echo "fuzz.sh: unknown target '$target' (process, correlation or all)" >&2; exit 2 ;;
esac
if [ "$mode" = run ] && { ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; }; then
  echo "fuzz.sh: seconds must be a positive whole number, got '$seconds'" >&2
  exit 2
fi

# libFuzzer's instrumentation needs nightly; cargo-fuzz drives it.
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (rustup)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi

target_dir=${FUZZ_TARGET_DIR:-$root/fuzz/target}

if [ "$mode" = cmin ]; then
  # cmin keeps a smallest set of inputs that covers every edge the corpus covers (-use_counters=0:
  # hit counts are not features here, which keeps the committed corpus at a few hundred files),
  # renamed to their hashes; the named seeds (seed-*) and reproducers (regression-*) are put back
  # under their names afterwards, since the stable replay looks for them by name.
  for t in "${targets[@]}"; do
    corpus=$root/fuzz/corpus/$t
    keep=$(mktemp -d)
    find "$corpus" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'regression-*' \) -exec cp {} "$keep" \;
    echo "== cmin $t: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
    cargo +nightly fuzz cmin --fuzz-dir "$root/fuzz" --target-dir "$target_dir" "$t" "$corpus" \
      -- -use_counters=0
    for named in "$keep"/*; do
      [ -f "$named" ] || continue
      # libFuzzer names an input by its SHA-1: drop that copy of a named file.
      rm -f "$corpus/$(sha1sum "$named" | cut -d' ' -f1)"
      cp "$named" "$corpus"/
    done
    rm -rf "$keep"
    echo "corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
  done
  exit 0
fi
log_dir=${FUZZ_LOG_DIR:-$(mktemp -d)}
mkdir -p "$log_dir"

for t in "${targets[@]}"; do
  corpus=$root/fuzz/corpus/$t
  mkdir -p "$corpus" "$root/fuzz/artifacts/$t"
  echo "== fuzz $t for ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) files; log: $log_dir/$t.log)"
  status=0
  # libFuzzer with -jobs writes fuzz-<job>.log into the working directory.
  (
    cd "$log_dir"
    rm -f fuzz-0.log
    cargo +nightly fuzz run --fuzz-dir "$root/fuzz" --target-dir "$target_dir" "$t" "$corpus" -- \
      -max_total_time="$seconds" -jobs=1 -workers=1 -print_final_stats=1 \
      -dict="$root/fuzz/dict/$t.dict" \
      ${FUZZ_FLAGS:-}
  ) || status=$?
  [ -f "$log_dir/fuzz-0.log" ] && mv "$log_dir/fuzz-0.log" "$log_dir/$t.log"
  if [ -f "$log_dir/$t.log" ]; then
    grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse)' "$log_dir/$t.log" | tail -n 1 || true
    grep -E '^stat::' "$log_dir/$t.log" | awk '!seen[$0]++' || true
  fi
  echo "corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
  if [ "$status" -ne 0 ] || grep -q 'contract violated\|ERROR: ' "$log_dir/$t.log" 2>/dev/null; then
    echo "fuzz.sh: $t found a failure (exit $status); the input is in fuzz/artifacts/$t/," \
         "the log in $log_dir/$t.log" >&2
    exit 1
  fi
done
