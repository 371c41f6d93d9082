#!/usr/bin/env bash
# A/B of two hookgate builds in queue mode: each round ingests a backlog with
# each build in turn (a fresh process and store), then times its drain, as
# bench/queue.sh does, alternating the builds so the machine's drift hits both
# alike; prints both medians and the ratio B / A.
#
#   STORE=redis bash bench/queue_ab.sh OLD_BINARY target/release/hookgate
#   STORE=always ROUNDS=5 bash bench/queue_ab.sh A B      # disk, sync = "always"
#
# STORE is "always" or "none" (disk) or "redis" (default), ROUNDS 3, DURATION 5.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bash bench/queue_ab.sh BINARY_A BINARY_B" >&2; exit 2; }
A_BIN=$(realpath "$1"); B_BIN=$(realpath "$2")
STORE=${STORE:-redis}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}

. bench/lib.sh
. bench/queue_lib.sh
need nginx wrk curl redis-server

start_upstream
start_queue_redis
qconfig always 0 1 2 "$WORK/x" > "$WORK/sig.toml"
sign_body "$A_BIN" "$WORK/sig.toml"

ING_A="" ING_B="" DR_A="" DR_B=""
echo "store: $STORE; load: wrk -t$THREADS -c$CONNS -d${DURATION}s; $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  ingest_then_drain "$A_BIN" "$STORE" "a-$r"
  ING_A+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$INGEST_OUT") "; DR_A+="$DRAIN_RATE "
  ingest_then_drain "$B_BIN" "$STORE" "b-$r"
  ING_B+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$INGEST_OUT") "; DR_B+="$DRAIN_RATE "
done
python3 - "$ING_A" "$ING_B" "$DR_A" "$DR_B" <<'PY'
import statistics, sys
ia, ib, da, db = ([float(x) for x in a.split()] for a in sys.argv[1:5])
for what, a, b in (("ingest", ia, ib), ("drain", da, db)):
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{what}: A {ma:.0f}/s, B {mb:.0f}/s, B/A x{mb / ma:.2f}")
PY
