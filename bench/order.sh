#!/usr/bin/env bash
# What ordering by key costs (SPEC §16 `order_by`): a backlog ingested into a
# queue route with nothing draining, then drained at concurrency 64 (as in
# bench/queue.sh), for a route without `order_by` and for one with
# `order_by = "header:X-Order-Key"` whose deliveries carry 1, 100 or 10000
# distinct keys in turn. Each ordered drain is quoted as a ratio against the
# unordered drain of the same round. On Redis, Redis's CPU time per delivery
# drained is shown too: on a machine whose cores Redis shares with hookgate
# and the app, it bounds the ordered drain.
#
#   bash bench/order.sh                      # disk (sync = always) and redis, 2 rounds
#   ROUNDS=1 DURATION=2 STORES=always bash bench/order.sh
#
# With one key the drain is one delivery at a time: its rate is one upstream
# round trip per delivery, whatever the concurrency.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-3}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
STORES=${STORES:-always redis}
KEYS_LIST=${KEYS_LIST:-1 100 10000}

. bench/lib.sh
. bench/queue_lib.sh
need nginx wrk curl redis-server

if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
start_upstream
start_queue_redis
qconfig always 0 1 2 "$WORK/x" > "$WORK/sig.toml"
sign_body "$BIN" "$WORK/sig.toml"

declare -A RATE RUS
echo "machine: $(nproc) cores, $(uname -r); ingest: wrk -t$THREADS -c$CONNS -d${DURATION}s; $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for store in $STORES; do
    ORDER_BY="" BENCH_ORDER_KEYS=0 ingest_then_drain "$BIN" "$store" "$store-plain-$r"
    RATE[$store-plain]+="$DRAIN_RATE "
    RUS[$store-plain]+="$DRAIN_REDIS_US "
    for k in $KEYS_LIST; do
      export BENCH_ORDER_KEYS=$k
      ORDER_BY="header:X-Order-Key" ingest_then_drain "$BIN" "$store" "$store-$k-$r"
      RATE[$store-$k]+="$DRAIN_RATE "
      RUS[$store-$k]+="$DRAIN_REDIS_US "
      unset BENCH_ORDER_KEYS
    done
  done
done

python3 - <<PY
import statistics
raw = {$(for k in "${!RATE[@]}"; do printf '"%s": [%s],' "$k" "$(sed 's/ $//; s/ /, /g' <<<"${RATE[$k]}")"; done)}
rus = {$(for k in "${!RUS[@]}"; do printf '"%s": [%s],' "$k" "$(sed 's/ $//; s/ /, /g' <<<"${RUS[$k]}")"; done)}
def cpu(key):
    return f"{statistics.median(rus[key]):.1f}" if key.startswith("redis") else "-"

names = {"always": "disk, sync = always", "redis": "redis (AOF everysec)"}
print()
print("| store | route | drain deliveries/s (median) | vs unordered (median of per-round ratios) | Redis CPU us per delivery (median) |")
print("|---|---|---:|---:|---:|")
for store in "$STORES".split():
    plain = raw[f"{store}-plain"]
    print(f"| {names.get(store, store)} | no order_by | {statistics.median(plain):.0f} | x1.00 | {cpu(f'{store}-plain')} |")
    for k in "$KEYS_LIST".split():
        v = raw[f"{store}-{k}"]
        rs = sorted(a / b for a, b in zip(v, plain))
        print(f"| {names.get(store, store)} | order_by, {k} keys | {statistics.median(v):.0f} | x{statistics.median(rs):.2f} | {cpu(f'{store}-{k}')} |")
PY
