#!/usr/bin/env bash
# The cluster benchmark (crates/wsm/benches/cluster/): several `wsm serve` processes on one
# redis-server. Failover time after SIGKILLing an owner (3 instances, heartbeat 1 s, stale after
# 3 s, 5 connections at 100 frames/s) and the overhead of a `SendRaw` forwarded to the owner
# (2 instances). Needs `redis-server` on PATH.
#
#   scripts/bench_cluster.sh                     # both figures
#   BENCH_ONLY=forward scripts/bench_cluster.sh  # one of them (failover, forward)
#
# Other knobs (see the bench's header): BENCH_RUNS, BENCH_CALLS, BENCH_WARMUP, WSM_BIN. Extra
# arguments go to `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "bench_cluster.sh: redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)" >&2
  exit 1
fi

# `cargo bench` builds the `wsm` binary with the bench, in the same (release-based) profile.
exec cargo bench -p wsm --bench cluster "$@"
