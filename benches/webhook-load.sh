#!/usr/bin/env bash
# Webhook acknowledgement under load: Switchyard against a bare axum handler, axum + group
# commit (the ceilings) and Node-RED 4 + SQLite (the peer), in one run. Installs Node-RED and
# better-sqlite3 with npm into benches/node-red/node_modules (needs Node.js ≥ 18, npm, and a C
# compiler for better-sqlite3 when no prebuilt binary can be fetched).
#
#   benches/webhook-load.sh            # 5 s per measurement
#   BENCH_SECS=10 benches/webhook-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nr=benches/node-red
port="${NR_PORT:-18800}"

command -v node >/dev/null || { echo "Node.js is needed for the Node-RED peer" >&2; exit 2; }
if [ ! -d "$nr/node_modules/node-red" ] || [ ! -d "$nr/node_modules/better-sqlite3/build" ]; then
  echo "== installing Node-RED 4 and better-sqlite3 (once)"
  (cd "$nr" && npm install --no-audit --no-fund --loglevel=error)
fi

mkdir -p "$nr/.user"
rm -f "$nr/.user/nodered.db"*
echo "== starting Node-RED on 127.0.0.1:$port"
NR_PORT="$port" node "$nr/node_modules/node-red/red.js" --settings "$nr/settings.js" >"$nr/.user/node-red.log" 2>&1 &
nr_pid=$!
trap 'kill "$nr_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if curl -s -o /dev/null -X POST -H 'content-type: application/json' \
      -d '{"entry":[{"changes":[{"value":{"messages":[{"id":"warm","from":"1","text":{"body":"hi"}}]}}]}]}' \
      "http://127.0.0.1:$port/webhook"; then
    break
  fi
  sleep 0.2
done

echo "== cargo bench -p switchyard-api --bench webhook"
NODE_RED_URL="http://127.0.0.1:$port/webhook" cargo bench -p switchyard-api --bench webhook
