#!/usr/bin/env bash
# A/B of two hookgate builds on the same load: alternating runs, a fresh
# process (and an empty store) per run, median req/s of each and the ratio.
#
#   cp target/release/hookgate /tmp/hookgate-a      # build A, then change, rebuild
#   bash bench/ab.sh /tmp/hookgate-a target/release/hookgate           # memory store
#   STORE=redis ROUNDS=6 bash bench/ab.sh /tmp/hookgate-a target/release/hookgate
#
# On a shared 2-core machine identical builds differ by 5-8% from run to run;
# for changes smaller than that count instructions (bench/instructions.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ab.sh BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
STORE=${STORE:-memory}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}

. bench/lib.sh
need nginx wrk redis-server

start_upstream
[ "$STORE" = redis ] && start_redis
PORT=$(free_port)
hg_config "$PORT" "$STORE" > "$WORK/hg.toml"
sign_body "$A" "$WORK/hg.toml"

declare -A RPS
for r in $(seq 1 "$ROUNDS"); do
  for bin in "$A" "$B"; do
    [ "$STORE" = redis ] && redis-cli -p "$RDS" flushall >/dev/null
    HOOKGATE_LOG=warn "$bin" -c "$WORK/hg.toml" & pid=$!
    wait_port "$PORT"
    sanity "$PORT"
    t0=$(ticks "$pid")
    out=$(load "$PORT" 2 50 "$DURATION")
    n=$(requests "$out")
    rps=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out")
    echo "round $r $(basename "$bin"): rps=$rps $(grep -o 'p99_us=[0-9]*' <<<"$out") cpu_us=$(( ($(ticks "$pid") - t0) * 1000000 / HZ / n ))"
    RPS[$bin]+="$rps "
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
python3 - "${RPS[$A]}" "${RPS[$B]}" <<'PY'
import statistics, sys
a, b = ([float(x) for x in s.split()] for s in sys.argv[1:3])
print(f"A median {statistics.median(a):.0f} req/s, B median {statistics.median(b):.0f} req/s, "
      f"B/A x{statistics.median(b) / statistics.median(a):.3f}; B faster in {sum(y > x for x, y in zip(a, b))} of {len(a)} rounds")
PY
