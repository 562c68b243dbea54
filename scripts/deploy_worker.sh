#!/usr/bin/env bash
# Uploads a worker.zip to WorkManager and starts it; prints the new worker's id on stdout (and nothing
# else there, so `id=$(scripts/deploy_worker.sh)` works). Progress and errors go to stderr.
#
# Usage: scripts/deploy_worker.sh [ZIP]          ZIP defaults to target/worker/worker.zip in the repo
# Environment (defaults in brackets):
#   WORKMANAGER_URL  [http://localhost:25001]
#   MIME_TYPE        [application/x-nativedll]  the NativeDllEngine's type as the Virtufin examples spell
#                    it; newer WorkManager builds register it as application/x-native-dll. If create fails
#                    with EngineNotFoundException / InvalidArgument, try the other spelling.
#   TOPIC            [command.websocketmanagercontroller]
#   GROUP            [websocketmanagercontroller]  set to an empty string to leave "group" out: newer
#                    WorkManager protos have no group field.
#   CURL_MAX_TIME    [300] seconds per HTTP call
#
# Calls: POST $WORKMANAGER_URL/v1/workers  {"code_source":{"content":"<base64 zip>"},"mime_type","topic","group"}
#        POST $WORKMANAGER_URL/v1/workers/{id}/start
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

zip="${1:-$root/target/worker/worker.zip}"
url="${WORKMANAGER_URL:-http://localhost:25001}"
url="${url%/}"
mime_type="${MIME_TYPE:-application/x-nativedll}"
topic="${TOPIC:-command.websocketmanagercontroller}"
group="${GROUP-websocketmanagercontroller}"
max_time="${CURL_MAX_TIME:-300}"

say() { echo "deploy_worker: $*" >&2; }
fail() { say "$*"; exit 1; }

[ -f "$zip" ] || fail "no worker zip at '$zip' (run scripts/build_worker.sh first)"
command -v curl >/dev/null 2>&1 || fail "curl is required"
command -v python3 >/dev/null 2>&1 || fail "python3 is required (JSON building and parsing)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The base64 of a real library is megabytes: it goes through a file, never the command line.
python3 - "$zip" "$tmp/create.json" "$mime_type" "$topic" "$group" <<'PY'
import base64, json, sys
zip_path, body_path, mime_type, topic, group = sys.argv[1:6]
with open(zip_path, "rb") as f:
    content = base64.b64encode(f.read()).decode("ascii")
body = {"code_source": {"content": content}, "mime_type": mime_type, "topic": topic}
if group:
    body["group"] = group
with open(body_path, "w") as f:
    json.dump(body, f)
PY

# post STEP URL [curl args...]: POSTs, leaves the response body in $tmp/response, fails on non-2xx.
post() {
  local step="$1" target="$2" status
  shift 2
  # -H 'Expect:' stops curl waiting for "100 Continue" before large uploads.
  if ! status="$(curl -sS -X POST -H 'Expect:' --connect-timeout 10 --max-time "$max_time" \
      -o "$tmp/response" -w '%{http_code}' "$@" "$target")"; then
    fail "$step: request to $target failed (see the curl error above)"
  fi
  case "$status" in
    2??) ;;
    *) fail "$step: $target answered HTTP $status: $(cat "$tmp/response" 2>/dev/null)" ;;
  esac
}

say "creating worker from $zip ($(wc -c <"$zip" | tr -d ' ') bytes, mime type $mime_type, topic $topic) at $url"
post "create worker" "$url/v1/workers" -H 'Content-Type: application/json' --data-binary "@$tmp/create.json"

if ! id="$(python3 - "$tmp/response" <<'PY'
import json, sys
try:
    with open(sys.argv[1], "rb") as f:
        reply = json.load(f)
except ValueError:
    sys.exit(1)
worker_id = reply.get("id") if isinstance(reply, dict) else None
if isinstance(worker_id, bool) or not isinstance(worker_id, (str, int)) or str(worker_id) == "":
    sys.exit(1)
print(worker_id)
PY
)"; then
  fail "create worker: the response has no \"id\": $(cat "$tmp/response")"
fi
# The id becomes a path segment; WorkManager ids are GUIDs, anything else is a surprise worth stopping on.
case "$id" in
  *[!A-Za-z0-9._~-]*) fail "create worker: unexpected worker id '$id'" ;;
esac

say "starting worker $id"
post "start worker $id" "$url/v1/workers/$id/start"

say "worker $id is started"
echo "$id"
