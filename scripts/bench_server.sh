#!/usr/bin/env bash
# The server benchmark (crates/wsm/benches/server/): Send round trips through gRPC, 10,000
# idle connections on one instance, and 1,000 connections over wss:// against the same over ws://. The bench process (feed side) and the spawned `wsm serve` each
# hold one socket per connection, so both need an open-file limit above BENCH_CONNS (default
# 10,000). This raises `ulimit -n` as far as it can (65,536 when the hard limit may be raised, as
# root; else up to the hard limit) and says so when it stays below 30,000.
#
#   scripts/bench_server.sh                 # both figures
#   BENCH_ONLY=send scripts/bench_server.sh # one of them (send, idle, tls)
#
# Other knobs (see the bench's header): BENCH_SENDS, BENCH_WARMUP, BENCH_RUNS, BENCH_CONNS,
# BENCH_TLS_CONNS, BENCH_INFLIGHT, BENCH_IDLE_SECONDS, WSM_BIN. Extra arguments go to `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

want=65536
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || true
  hard=$(ulimit -Hn)
fi
if [ "$hard" = unlimited ] || [ "$hard" -ge "$want" ]; then
  ulimit -Sn "$want"
else
  ulimit -Sn "$hard"
fi
limit=$(ulimit -Sn)
echo "bench_server.sh: open-file limit $limit (hard limit $(ulimit -Hn))"
conns=${BENCH_CONNS:-10000}
if [ "$limit" -lt 30000 ]; then
  echo "bench_server.sh: NOTE: the open-file limit stays below 30000: the hard limit is" \
    "$(ulimit -Hn) and this shell may not raise it (that needs CAP_SYS_RESOURCE, or a higher" \
    "limit from limits.conf or the service manager)." >&2
  if [ "$limit" -lt $(( conns + 1000 )) ]; then
    echo "bench_server.sh: WARNING: $limit is too low for $conns connections (each of the two" \
      "processes holds one socket per connection); lower BENCH_CONNS or raise the limit." >&2
  else
    echo "bench_server.sh: $limit is enough for $conns connections: each of the two processes" \
      "holds one socket per connection." >&2
  fi
fi

# `cargo bench` builds the `wsm` binary with the bench, in the same (release-based) profile.
exec cargo bench -p wsm --bench server "$@"
