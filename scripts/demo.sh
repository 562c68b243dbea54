#!/usr/bin/env bash
# The main job: the whole chain on the embedded default, nothing to install.
#   1. builds wsm, the feed server, the controller plugin and the C host harness;
#   2. starts `wsm serve` (memory state and bus) and a local market feed, on loopback;
#   3. drives the plugin through the harness, as WorkManager would, over HTTP:
#      create -> publish -> subscribe -> list (publishing first, so the venue's answer to the
#      SUBSCRIBE is always seq=1: the output is the same on every run);
#   4. tails the topic and prints the first frames with their seq;
#   5. stops everything it started. Exits non-zero if any step fails.
# Environment: DEMO_PROFILE=release builds optimised (default: debug, shared with the tests);
# DEMO_FRAMES=N frames to show (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${DEMO_PROFILE:-debug}"
frames="${DEMO_FRAMES:-5}"
topic="md.btcusdt"
cargo_flags=(-q)
[ "$profile" = release ] && cargo_flags+=(--release)

step() { printf '\n== %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; exit 1; }

step "1. build"
echo "building wsm, feed-server, libcontroller.so and host_sim ($profile; first run: about 2 minutes)..."
cargo build "${cargo_flags[@]}" -p wsm --bin wsm -p feed-server --bin feed-server -p controller --lib
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$profile"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cc -std=c11 -O2 -pthread tests/harness/fb.c tests/harness/gateway.c tests/harness/host_sim.c \
  -o "$work/host_sim" -ldl
echo "built wsm, feed-server, libcontroller.so and host_sim ($profile)"

# Waits until FILE has a line starting with PREFIX; prints the rest of that line.
wait_line() {
  local file="$1" prefix="$2" line=""
  for _ in $(seq 1 100); do
    line="$(grep -m1 "^$prefix" "$file" 2>/dev/null || true)"
    [ -n "$line" ] && { echo "${line#"$prefix"}"; return 0; }
    sleep 0.1
  done
  return 1
}

step "2. start wsm serve (memory backends) and the feed server"
# Loopback is refused by the SSRF guard unless allowed; the demo allows exactly this host.
"$target/wsm" serve --bind 127.0.0.1 -s 0 -g 0 --allowed-hosts 127.0.0.1 --log-level warn \
  >"$work/wsm.out" 2>"$work/wsm.err" &
pids+=($!)
"$target/feed-server" --listen 127.0.0.1:0 --rate 10 --wait-for-subscribe \
  >"$work/feed.out" 2>"$work/feed.err" &
pids+=($!)
http="$(wait_line "$work/wsm.out" "http listening on ")" || { cat "$work/wsm.err" >&2; fail "wsm did not start"; }
grpc="$(wait_line "$work/wsm.out" "grpc listening on ")" || fail "wsm printed no gRPC address"
feed="$(wait_line "$work/feed.out" "listening ")" || { cat "$work/feed.err" >&2; fail "the feed server did not start"; }
curl -fsS "http://$http/ready" >/dev/null || fail "wsm is not ready"
echo "wsm: http $http, grpc $grpc; feed: $feed"
export WSM_SERVER="http://$grpc"

# One harness run: the plugin loaded by dlopen, its gateway calls sent to wsm's /v1/invoke.
plugin() {
  "$work/host_sim" --lib "$target/libcontroller.so" --gateway "http://$http" \
    --expect '"success":true' "$@"
}

step "3. the controller plugin, through the C host harness (HTTP gateway mode)"
created="$(plugin "{\"command\":\"create\",\"url\":\"$feed/ws\",\"tags\":{\"desk\":\"demo\"}}")" \
  || fail "create: $created"
echo "create    -> $created"
id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$created")"

# Tail from before the first frame is published, so the output starts at seq=1.
"$target/wsm" tail "$topic" --count "$frames" >"$work/tail.out" 2>"$work/tail.err" &
tail_pid=$!
pids+=("$tail_pid")
sleep 0.3

replies="$(plugin \
  "{\"command\":\"publish\",\"id\":\"$id\",\"topic\":\"$topic\"}" \
  "{\"command\":\"subscribe\",\"id\":\"$id\",\"params\":[\"btcusdt@depth@100ms\"]}" \
  '{"command":"list","filters":{"desk":"demo"}}')" || fail "publish/subscribe/list: $replies"
paste -d' ' <(printf '%-9s ->\n' publish subscribe list) <(echo "$replies")

step "4. wsm tail $topic (first $frames frames)"
for _ in $(seq 1 100); do
  kill -0 "$tail_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$tail_pid" || { cat "$work/tail.err" >&2; fail "wsm tail failed"; }
cat "$work/tail.out"
shown="$(grep -c '^seq=' "$work/tail.out" || true)"
[ "$shown" -eq "$frames" ] || fail "expected $frames frames, saw $shown"
[ "$(head -1 "$work/tail.out" | cut -d' ' -f1)" = "seq=1" ] || fail "the first frame is not seq=1"

step "wsm list"
"$target/wsm" list

step "5. stop wsm, the feed server and the tail"
cleanup
trap - EXIT
echo "demo: ok"
