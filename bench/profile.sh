#!/usr/bin/env bash
# Where a hookgate build's time goes under the bench/ab.sh load (wrk -t2 -c50,
# loopback only, bounded): the probes each session used to rewrite by hand.
#
#   bash bench/profile.sh syscalls [BINARY]   # strace -c: system calls per delivery
#   bash bench/profile.sh switches [BINARY]   # voluntary/involuntary context switches per
#                                             #   request: hookgate, nginx, haproxy (same run)
#   bash bench/profile.sh perf [BINARY]       # perf record -e cpu-clock: top symbols, kernel share
#   bash bench/profile.sh wakes [BINARY]      # perf: where write(2) calls come from (call graphs)
#   STORE=redis bash bench/profile.sh ...     # the Redis store (syscalls, perf, wakes);
#                                             #   also redis-server's CPU and SET cost per delivery
#
# Without BINARY, this tree's release build. DURATION (default 6) seconds of load.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: bench/profile.sh syscalls|switches|perf|wakes [BINARY]}
STORE=${STORE:-memory}
DURATION=${DURATION:-6}

. bench/lib.sh
need nginx wrk strace
[ "$MODE" = switches ] && need haproxy
case $MODE in perf | wakes) command -v perf >/dev/null || need linux-perf ;; esac

if [ $# -ge 2 ]; then BIN=$(realpath "$2"); else cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
start_upstream
[ "$STORE" = redis ] && start_redis
[ "$MODE" = switches ] && start_proxies
PORT=$(free_port)
hg_config "$PORT" "$STORE" > "$WORK/hg.toml"
sign_body "$BIN" "$WORK/hg.toml"
HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg.toml" & PIDS+=($!); HG_PID=$!
wait_port "$PORT"
sanity "$PORT"

# Voluntary and involuntary switches of a process's threads and its children's.
switches() {
  local v=0 i=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    for t in /proc/"$p"/task/*/status; do
      v=$((v + $(awk '/^voluntary_ctxt/ {print $2}' "$t"))); i=$((i + $(awk '/^nonvoluntary_ctxt/ {print $2}' "$t")))
    done
  done
  echo "$v $i"
}

r0=$([ "$STORE" = redis ] && ticks "$RDS_PID" || echo 0)
case $MODE in
syscalls)
  strace -c -f -p "$HG_PID" -o "$WORK/strace.txt" 2>/dev/null & st=$!
  sleep 1
  load "$PORT" 2 50 "$DURATION" > "$WORK/out.txt"
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  n=$(requests "$(<"$WORK/out.txt")")
  echo "$n deliveries under strace (slower than without); calls per delivery:"
  awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "  %-14s %.3f\n", $NF, $4 / n}' "$WORK/strace.txt" | sort -k2 -nr | sed 10q
  ;;
switches)
  for name in hookgate nginx haproxy; do
    case $name in hookgate) pid=$HG_PID port=$PORT ;; nginx) pid=$NGX_PID port=$NGX ;; haproxy) pid=$HAP_PID port=$HAP ;; esac
    read -r v0 i0 < <(switches "$pid"); t0=$(ticks "$pid")
    load "$port" 2 50 "$DURATION" > "$WORK/out.txt"
    read -r v1 i1 < <(switches "$pid"); t1=$(ticks "$pid")
    n=$(requests "$(<"$WORK/out.txt")")
    awk -v n="$n" -v v=$((v1 - v0)) -v i=$((i1 - i0)) -v us=$(((t1 - t0) * 1000000 / HZ)) -v name=$name \
      -v rps="$(grep -o 'rps=[0-9.]*' "$WORK/out.txt")" \
      'BEGIN {printf "%-9s %s cpu_us=%.1f voluntary=%.3f involuntary=%.3f per request\n", name, rps, us / n, v / n, i / n}'
  done
  ;;
perf | wakes)
  if [ "$MODE" = perf ]; then
    args=(-e cpu-clock -F 4000)
  else
    args=(-e syscalls:sys_enter_write --call-graph "dwarf,16384")
  fi
  perf record "${args[@]}" -p "$HG_PID" -o "$WORK/perf.data" 2>/dev/null & pr=$!
  sleep 0.5
  load "$PORT" 2 50 "$DURATION" > "$WORK/out.txt" & lp=$!
  wait "$lp"
  kill -INT "$pr"; wait "$pr" 2>/dev/null || true
  echo "$(requests "$(<"$WORK/out.txt")") deliveries, $(grep -o 'rps=[0-9.]*' "$WORK/out.txt")"
  # (head closes the pipe early: no pipefail for these.)
  set +o pipefail
  if [ "$MODE" = perf ]; then
    perf report -i "$WORK/perf.data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -4
    perf report -i "$WORK/perf.data" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
  else
    perf report -i "$WORK/perf.data" --no-children --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
  fi
  set -o pipefail
  ;;
*)
  echo "unknown mode $MODE (syscalls, switches, perf, wakes)" >&2
  exit 2
  ;;
esac

if [ "$STORE" = redis ] && [ "$MODE" != switches ]; then
  n=$(requests "$(<"$WORK/out.txt")")
  echo "redis-server CPU: $((($(ticks "$RDS_PID") - r0) * 1000000 / HZ / n)) us per delivery (of the same 2 cores)"
  redis-cli -p "$RDS" info commandstats | tr -d '\r' | awk -F'[:,=]' -v n="$n" \
    '/^cmdstat_/ {printf "redis %s: %.2f calls per delivery, %s us per call inside redis-server\n", substr($1, 9), $3 / n, $7}'
fi
