#!/usr/bin/env bash
# User-space instructions per delivery, counted by valgrind's callgrind:
# repeatable to ~0.5% for the same binary whatever else the machine does, so it
# shows hot-path changes too small for req/s on a shared machine. One worker
# thread, memory store (STORE=redis: a redis-server of its own; only hookgate's
# instructions are counted, not the server's), a bounded wrk load (-t1 -c8 for
# DURATION seconds).
#
#   bash bench/instructions.sh                         # this tree's release build
#   bash bench/instructions.sh /tmp/hookgate-a         # another build
#
# Under valgrind SHA-256 runs in software (no SHA-NI), so HMAC and the memory
# store's key weigh more here than on the real CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-12}

. bench/lib.sh
need nginx wrk valgrind

if [ $# -ge 1 ]; then BIN=$(realpath "$1"); else cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
STORE=${STORE:-memory}
start_upstream
[ "$STORE" = redis ] && start_redis
PORT=$(free_port)
hg_config "$PORT" "$STORE" > "$WORK/hg.toml"
sign_body "$BIN" "$WORK/hg.toml"

HOOKGATE_WORKERS=1 HOOKGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
  "$BIN" -c "$WORK/hg.toml" 2>"$WORK/valgrind.log" & pid=$!
wait_port "$PORT"
sanity "$PORT"
out=$(timeout $((DURATION + 60)) wrk -t1 -c8 -d"${DURATION}s" -s bench/delivery.lua "http://127.0.0.1:$PORT/webhooks/tampa" | grep '^BENCH')
kill -INT "$pid"; wait "$pid" 2>/dev/null || true
n=$(requests "$out")
bad=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$out")
[ "$bad" = 0 ] || { echo "$bad deliveries were not answered 200" >&2; exit 1; }
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out")
echo "$(basename "$BIN"): $n deliveries, $ir instructions, $((ir / n)) per delivery (startup included)"
