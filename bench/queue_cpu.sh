#!/usr/bin/env bash
# Where a queue drain's CPU goes: a backlog is ingested (as in bench/queue.sh),
# then drained to the live upstream while the CPU time of hookgate (per
# thread) and of redis-server is read from /proc; prints deliveries/s, CPU
# microseconds per delivery, and how busy the machine was.
#
#   bash bench/queue_cpu.sh                    # Redis store, then disk sync = "none"
#   STORES="always" bash bench/queue_cpu.sh    # disk, sync = "always"
#   CALLGRIND=1 bash bench/queue_cpu.sh        # instead: user-space instructions per
#                                              # drained delivery (valgrind, 1 worker thread)
#
# BIN=/path/to/hookgate measures another build; CONCURRENCY (64), DURATION (4 s of ingest).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 CONNS=50
DURATION=${DURATION:-4}
CONCURRENCY=${CONCURRENCY:-64}

. bench/lib.sh
. bench/queue_lib.sh
need nginx wrk curl redis-server
[ -n "${CALLGRIND:-}" ] && need valgrind
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
start_upstream
start_queue_redis
RPID=$(pgrep -f "redis-server 127.0.0.1:$RQ")
qconfig always 0 1 2 "$WORK/x" > "$WORK/sig.toml"
sign_body "$BIN" "$WORK/sig.toml"

cpu() { awk '{print $14 + $15}' "$1/stat"; }
threads() { for t in /proc/$1/task/*; do echo "$(basename "$t") $(tr ' ' _ < "$t/comm") $(cpu "$t")"; done | sort; }
drained() { while :; do read -r p s f _ <<<"$(queue_state "$1")"; [ $((p + s + f)) = 0 ] && return; sleep 0.05; done; }

for store in ${STORES:-redis none}; do
  P=$(free_port); A=$(free_port)
  qconfig "$store" 0 "$P" "$A" "$WORK/q-$store" > "$WORK/hg-$store.toml"
  HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg-$store.toml" & PIDS+=($!); HG=$!
  wait_port "$P"
  load "$P" "$THREADS" "$CONNS" "$DURATION" >/dev/null
  read -r pending _ _ _ <<<"$(queue_state "$A")"
  sed -i "s/^concurrency = 0\$/concurrency = $CONCURRENCY/" "$WORK/hg-$store.toml"
  if [ -n "${CALLGRIND:-}" ]; then
    # The backlog stays stored; a process under callgrind drains it.
    kill "$HG"; wait "$HG" 2>/dev/null || true
    HOOKGATE_WORKERS=1 HOOKGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$store.out" \
      "$BIN" -c "$WORK/hg-$store.toml" 2>/dev/null & HG=$!
    wait_port "$A"; drained "$A"
    kill -INT "$HG"; wait "$HG" 2>/dev/null || true
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg-$store.out")
    echo "$store drain: $pending deliveries, $((ir / pending)) instructions per delivery (startup included)"
    continue
  fi
  s0=$(threads "$HG"); r0=$(cpu "/proc/$RPID"); m0=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat); t0=$(date +%s.%N)
  kill -HUP "$HG"
  drained "$A"
  t1=$(date +%s.%N); s1=$(threads "$HG"); r1=$(cpu "/proc/$RPID"); m1=$(awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat)
  python3 - "$store" "$pending" "$t0" "$t1" "$r0" "$r1" "$m0" "$m1" "$(getconf CLK_TCK)" "$s0" "$s1" <<'PY'
import sys
store, n, t0, t1, r0, r1, m0, m1, hz = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:9]), int(sys.argv[9])
parse = lambda s: {l.split()[0]: (l.split()[1], int(l.split()[2])) for l in s.splitlines() if l.strip()}
a, b = parse(sys.argv[10]), parse(sys.argv[11])
el = t1 - t0
per = {tid: (name, (b[tid][1] - a[tid][1]) / hz) for tid, (name, _) in b.items() if tid in a}
hg = sum(c for _, c in per.values())
print(f"{store} drain: {n} in {el:.2f} s = {n / el:.0f}/s; CPU us per delivery: hookgate {hg / n * 1e6:.1f}, "
      f"redis-server {(r1 - r0) / hz / n * 1e6:.1f}; machine busy {(m1 - m0) / hz / el:.2f} cores")
for tid, (name, c) in sorted(per.items(), key=lambda x: -x[1][1]):
    if c > 0:
        print(f"  thread {name}: {c / el:.0%} of a core")
PY
  kill "$HG"; wait "$HG" 2>/dev/null || true
done
