#!/usr/bin/env bash
# Queue mode (SPEC §5) on loopback, in the same run as nginx and haproxy doing
# plain reverse proxying in front of the same nginx `return 200` upstream:
#
# - ingest: senders' acks/s into a queue route while nothing drains (the route
#   has `concurrency = 0`: deliveries are stored and acked, none is attempted —
#   the app-down case without the refused connection attempts), for the disk
#   store with sync = "always" and sync = "none", and the Redis store (a
#   redis-server with AOF, appendfsync everysec);
# - drain: the backlog that ingest stored is delivered to the live upstream
#   (a SIGHUP raises concurrency to 64; no new ingest); deliveries/s until
#   /queue shows nothing pending, scheduled or in flight;
# - the proxies' forwarding rate under the same wrk load, for the ratios.
#
#   bash bench/queue.sh                       # 3 rounds, 6 s of ingest each
#   ROUNDS=1 DURATION=3 bash bench/queue.sh
#   BACKLOG=1000000 bash bench/queue.sh       # also: RSS while a 1M backlog builds up
#   ROUNDS=0 BACKLOG=1000000 bash bench/queue.sh   # only that
#   STORES="always always-shm" bash bench/queue.sh # sync = "always" on disk and on a
#                                             # tmpfs (/dev/shm): the same fdatasync calls,
#                                             # a device that flushes for free
#
# Needs nginx, haproxy and wrk (Debian packages; installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
BACKLOG=${BACKLOG:-0}
STORES=${STORES:-always none redis}

. bench/lib.sh
. bench/queue_lib.sh
need nginx haproxy wrk curl redis-server

# BIN=/path/to/hookgate measures another build (no cargo build then).
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
start_upstream
start_queue_redis
start_proxies


qconfig always 0 1 2 "$WORK/x" > "$WORK/sig.toml"
sign_body "$BIN" "$WORK/sig.toml"

declare -A RPS
echo "machine: $(nproc) cores, $(uname -r); load: wrk -t$THREADS -c$CONNS -d${DURATION}s; $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for px in nginx:$NGX haproxy:$HAP; do
    name=${px%%:*}; port=${px##*:}
    out=$(load "$port" "$THREADS" "$CONNS" "$DURATION")
    echo "  $name forwarding: $out"
    RPS[$name]+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out") "
  done
  for sync in $STORES; do
    ingest_then_drain "$BIN" "$sync" "$sync-$r"
    RPS[ingest-$sync]+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$INGEST_OUT") "
    RPS[drain-$sync]+="$DRAIN_RATE "
  done
done

[ "$ROUNDS" -gt 0 ] && python3 - <<PY
import statistics
raw = {$(for k in "${!RPS[@]}"; do printf '"%s": [%s],' "$k" "$(sed 's/ $//; s/ /, /g' <<<"${RPS[$k]}")"; done)}
med = {k: statistics.median(v) for k, v in raw.items()}
# The machine drifts from round to round (all targets together), so each
# hookgate figure is compared with the best proxy of its own round, and the
# ratio quoted is the median of those per-round ratios.
best_of_round = [max(a, b) for a, b in zip(raw["nginx"], raw["haproxy"])]
def ratio(k):
    rs = sorted(v / b for v, b in zip(raw[k], best_of_round))
    span = f" ({rs[0]:.2f}-{rs[-1]:.2f})" if len(rs) > 1 else ""
    return f"x{statistics.median(rs):.2f}{span}"
print()
print("| target | deliveries/s (median) | vs best proxy (median of per-round ratios) | vs qhook's ~730/s ingest |")
print("|---|---:|---:|---:|")
for k in ["nginx", "haproxy"]:
    print(f"| {k} forwarding | {med[k]:.0f} | {ratio(k)} | |")
names = {"always": "disk, sync = always", "none": "disk, sync = none", "redis": "redis (AOF everysec)",
         "always-shm": "tmpfs, sync = always"}
for phase in ["ingest", "drain"]:
    for store in "$STORES".split():
        k = f"{phase}-{store}"
        print(f"| hookgate {phase}, {names[store]} | {med[k]:.0f} | {ratio(k)} | x{med[k] / 730:.0f} |")
PY

if [ "$BACKLOG" -gt 0 ]; then
  P=$(free_port); A=$(free_port)
  # The memory dedupe store remembers every ID up to max_entries (~80 bytes
  # each, see README); bounded small here so the figures show the queue alone.
  { printf '[dedupe]\nmax_entries = 10000\n'; qconfig always 0 "$P" "$A" "$WORK/q-backlog"; } > "$WORK/hg-backlog.toml"
  HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg-backlog.toml" & PIDS+=($!); HG=$!
  wait_port "$P"
  echo
  echo "RSS while a backlog of $BACKLOG builds up (sync = always, nothing drains):"
  echo "  stored 0: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$HG/status)"
  deadline=$((SECONDS + 600))
  while :; do
    read -r p _ _ _ <<<"$(queue_state "$A")"
    [ "$p" -ge "$BACKLOG" ] && break
    [ "$SECONDS" -lt "$deadline" ] || { echo "backlog did not reach $BACKLOG in 600 s" >&2; exit 1; }
    load "$P" "$THREADS" "$CONNS" 5 >/dev/null
    read -r p _ _ _ <<<"$(queue_state "$A")"
    echo "  stored $p: $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' /proc/$HG/status), disk $(du -sm "$WORK/q-backlog" | cut -f1) MB"
  done
  echo "  peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.1f MB", $2/1024}' /proc/$HG/status)"
fi
