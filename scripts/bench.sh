#!/usr/bin/env bash
# Every benchmark of the project in one run, and one summary table of their figures. Each bench
# appends its figures as tab-separated rows to the file in BENCH_ROWS (figure, ours, baseline,
# ratio, goal, command); this script collects them, prints the table, and rewrites the block
# between `<!-- bench.sh:begin -->` and `<!-- bench.sh:end -->` in BENCHMARKS.md. The rest of that
# file, the detailed sections, is left alone. Re-running replaces the block.
#
#   scripts/bench.sh                          # everything: ~5 min on 2 cores, + ~10 min cold build
#   BENCH_ONLY=send,forward scripts/bench.sh  # a subset: process, ingest, venue, continuity, send, idle, tls, failover, forward
#   BENCH_QUICK=1 scripts/bench.sh            # small counts, to check the plumbing (not for quoting)
#
# What runs, in this order (each bench's header says how it measures):
#   process   cargo bench -p controller --bench process: Process per call from Rust and, through
#             the C host harness tests/harness/host_sim (built here), from C; dlopen + first
#             call; the stripped library's size
#   ingest    cargo bench -p wsm --bench ingest: memory bus against the bare tokio-tungstenite
#             client, Redis against the naive Rust bridge and the hand-written Python bridge
#             (crates/wsm/benches/python_bridge.py, its packages installed into a venv under the
#             target directory)
#   venue     cargo bench -p wsm --bench venue: decompressed ingest against the same frames
#             uncompressed, the cost of inflating alone, pacing accuracy (about 1 min)
#   continuity cargo bench -p wsm --bench continuity: two legs against one on the same broadcast
#             frames, the arbiter's cost per frame, rotations (about 1 min)
#   send, idle, tls   scripts/bench_server.sh (it raises the open-file limit)
#   failover, forward scripts/bench_cluster.sh
#
# With BENCH_ONLY the block is rewritten from what ran, and says which figures those were: one
# table always comes from one run of one commit.
#
# Environment: BENCH_ONLY, BENCH_QUICK (above); BENCH_PYTHON (an interpreter that has the Python
# bridge's packages; default: the venv this script makes); CARGO_TARGET_DIR. The benches' own knobs
# (BENCH_RUNS, BENCH_FRAMES, ...) pass through to every bench, and BENCH_RUNS means something
# different in each, so leave them unset for the full table. Needs cargo, cc, redis-server and
# python3 (with venv; PyPI reachable for the first run).
#
# Exit status: 0 when every bench ran and passed its own checks; 1 when one failed (its row in the
# table says FAILED); 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
all=process,ingest,venue,continuity,send,idle,tls,failover,forward
only=${BENCH_ONLY:-$all}
# Below, BENCH_ONLY is each bench's own list of figures.
unset BENCH_ONLY
quick=${BENCH_QUICK:-0}
[ "$quick" = 0 ] && quick=""
target=${CARGO_TARGET_DIR:-$PWD/target}

for name in ${only//,/ }; do
  case ",$all," in
    *",$name,"*) ;;
    *) echo "bench.sh: unknown name '$name' in BENCH_ONLY (known: $all)" >&2; exit 2 ;;
  esac
done
wanted() {
  local name
  for name in "$@"; do
    case ",$only," in *",$name,"*) return 0 ;; esac
  done
  return 1
}
# The names of $1..$n that were asked for, comma-separated.
subset() {
  local name picked=""
  for name in "$@"; do
    if wanted "$name"; then picked=${picked:+$picked,}$name; fi
  done
  echo "$picked"
}

grep -q '^<!-- bench.sh:begin -->$' BENCHMARKS.md && grep -q '^<!-- bench.sh:end -->$' BENCHMARKS.md || {
  echo "bench.sh: BENCHMARKS.md lacks the lines <!-- bench.sh:begin --> and <!-- bench.sh:end -->" >&2
  exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say() { printf '\n== bench.sh: %s\n' "$*"; }

# --- Build (release): the benches, the wsm binary they spawn, the C host harness.
say "building (release)"
if wanted process; then
  cargo bench -p controller --bench process --no-run
  mkdir -p "$target/bench"
  host_sim=$target/bench/host_sim
  # As tests/harness/README.md builds it.
  cc -std=c11 -Wall -Wextra -Werror -O2 -pthread tests/harness/fb.c tests/harness/gateway.c \
    tests/harness/host_sim.c -o "$host_sim" -ldl
fi
if wanted ingest venue continuity send idle failover forward; then
  cargo bench -p wsm --bench ingest --bench venue --bench continuity --bench server --bench cluster --no-run
fi

# --- The Python bridge's interpreter: a venv with the pinned packages, made once per target dir.
python=${BENCH_PYTHON:-}
if wanted ingest && [ -z "$python" ]; then
  venv=$target/bench-venv
  requirements=crates/wsm/benches/python_bridge.requirements.txt
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    python=$venv/bin/python
  else
    say "installing the Python bridge's packages into $venv"
    if python3 -m venv "$venv" &&
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"; then
      cp "$requirements" "$venv/installed-requirements.txt"
      python=$venv/bin/python
    else
      echo "bench.sh: WARNING: could not make the venv for the Python bridge; its row will say" \
        "'not run'. Set BENCH_PYTHON to an interpreter with $requirements installed." >&2
    fi
  fi
fi

# --- Run every bench in turn. Each appends its rows to $work/<step>.rows; a bench that fails
# (lost frames, failed calls, a missed check) gets one FAILED row instead, since its figures do
# not count.
failed=0
: >"$work/steps"
run() {
  local step=$1 command=$2
  shift 2
  say "$step: $command"
  local t0=$SECONDS status=0
  env BENCH_ROWS="$work/$step.rows" "$@" || status=$?
  echo "$step $status $((SECONDS - t0))" >>"$work/steps"
  if [ "$status" != 0 ]; then
    failed=1
    printf '%s bench\tFAILED: exit status %s, no figures (its output says why)\t—\t—\t—\t%s\n' \
      "$step" "$status" "$command" >"$work/$step.rows"
  fi
}

if wanted process; then
  run process "cargo bench -p controller --bench process" \
    HOST_SIM="$host_sim" \
    ${quick:+BENCH_CALLS=20000 BENCH_PROCESSES=3 BENCH_COLD_RUNS=5 BENCH_C_REPEAT=20000 BENCH_C_RUNS=1} \
    cargo bench -p controller --bench process
fi
if wanted ingest; then
  run ingest "cargo bench -p wsm --bench ingest" \
    BENCH_PYTHON="$python" \
    ${quick:+BENCH_BARE_FRAMES=200000 BENCH_FRAMES=200000 BENCH_REDIS_FRAMES=20000 BENCH_PYTHON_FRAMES=2000 BENCH_RUNS=1} \
    cargo bench -p wsm --bench ingest
fi
if wanted venue; then
  run venue "cargo bench -p wsm --bench venue" \
    ${quick:+BENCH_FRAMES=100000 BENCH_PACED=10} \
    cargo bench -p wsm --bench venue
fi
if wanted continuity; then
  run continuity "cargo bench -p wsm --bench continuity" \
    ${quick:+BENCH_FRAMES=100000} \
    cargo bench -p wsm --bench continuity
fi
server=$(subset send idle tls)
if [ -n "$server" ]; then
  run server "scripts/bench_server.sh" \
    BENCH_ONLY="$server" \
    ${quick:+BENCH_SENDS=500 BENCH_WARMUP=50 BENCH_RUNS=1 BENCH_CONNS=500 BENCH_TLS_CONNS=100 BENCH_IDLE_SECONDS=1} \
    scripts/bench_server.sh
fi
cluster=$(subset failover forward)
if [ -n "$cluster" ]; then
  run cluster "scripts/bench_cluster.sh" \
    BENCH_ONLY="$cluster" \
    ${quick:+BENCH_RUNS=1 BENCH_CALLS=500 BENCH_WARMUP=50} \
    scripts/bench_cluster.sh
fi

# --- The table.
took=$((SECONDS - started))
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The block this script writes does not count as a change.
if [ -n "$(git status --porcelain -- . ':(exclude)BENCHMARKS.md' 2>/dev/null)" ]; then
  commit="$commit with uncommitted changes"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
{
  echo "<!-- bench.sh:begin -->"
  if [ -n "$quick" ]; then
    echo "**Quick run — not for quoting.** \`BENCH_QUICK=1\`: small counts, only to check the plumbing."
    echo
  fi
  echo "Run of $(date -u +%Y-%m-%d) (UTC), commit \`$commit\`, $(nproc) CPUs ($cpu${cpu:+; }$(uname -sr));" \
    "took $((took / 60)) min $((took % 60)) s, builds included."
  if [ "$only" != "$all" ]; then
    echo "Partial run: \`BENCH_ONLY=$only\`; the other figures were not run."
  fi
  echo
  echo "| figure | ours | baseline, same run | ratio (ours ÷ baseline) | goal | command |"
  echo "|---|---|---|---|---|---|"
  for step in process ingest venue continuity server cluster; do
    [ -f "$work/$step.rows" ] || continue
    awk -F '\t' '{
      for (i = 1; i <= 6; i++) gsub(/\|/, "\\|", $i)
      printf "| %s | %s | %s | %s | %s | `%s` |\n", $1, $2, $3, $4, $5, $6
    }' "$work/$step.rows"
  done
  echo "<!-- bench.sh:end -->"
} >"$work/block.md"

awk -v block="$work/block.md" '
  $0 == "<!-- bench.sh:begin -->" { while ((getline line < block) > 0) print line; skip = 1; next }
  $0 == "<!-- bench.sh:end -->" { skip = 0; next }
  !skip { print }
' BENCHMARKS.md >"$work/BENCHMARKS.md"
cp "$work/BENCHMARKS.md" BENCHMARKS.md

say "summary (written to BENCHMARKS.md)"
sed '1d;$d' "$work/block.md"
echo
while read -r step status seconds; do
  echo "bench.sh: $step: $seconds s, exit status $status"
done <"$work/steps"
echo "bench.sh: total $((took / 60)) min $((took % 60)) s"
exit "$failed"
