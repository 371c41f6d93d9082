#!/usr/bin/env bash
# Reproducible loopback benchmark: hookgate (memory and Redis store) against
# nginx and haproxy doing plain reverse proxying, all in front of the same
# nginx `return 200` upstream, driven by the same wrk load, alternating over
# several rounds. Prints req/s, p50, p99 per target and the median ratios.
#
#   bash bench/run.sh            # 5 rounds of 6 s per target (~3 minutes)
#   ROUNDS=5 DURATION=10 CONNS=64 bash bench/run.sh
#
# Needs nginx, haproxy, wrk and redis-server (Debian packages; installed with
# apt-get when missing). Loopback only; every run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}

. bench/lib.sh
need nginx haproxy wrk redis-server

cargo build --release --quiet
BIN=$PWD/target/release/hookgate

start_upstream
start_redis
HGM=$(free_port); HGR=$(free_port)
start_proxies

# --- hookgate, memory store and Redis store
hg_config "$HGM" memory > "$WORK/hg-memory.toml"
hg_config "$HGR" redis > "$WORK/hg-redis.toml"
HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg-memory.toml" & PIDS+=($!); HGM_PID=$!
HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg-redis.toml" & PIDS+=($!); HGR_PID=$!

for p in $NGX $HAP $HGM $HGR; do wait_port "$p"; done
IDLE_RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$HGM_PID/status)

sign_body "$BIN" "$WORK/hg-memory.toml"
for port in $NGX $HAP $HGM $HGR; do sanity "$port"; done

declare -A RESULTS
run_one() { # name port pid-of-the-target [pid of its Redis]
  local out t0 u0 r0 m0 n
  t0=$(ticks "$3"); u0=$(ticks "$UP_PID"); r0=$(ticks ${4:-}); m0=$(busy)
  out=$(load "$2" "$THREADS" "$CONNS" "$DURATION")
  n=$(requests "$out")
  out+=" cpu_us=$(( ($(ticks "$3") - t0) * 1000000 / HZ / n ))"
  out+=" redis_cpu_us=$(if [ -n "${4:-}" ]; then echo $(( ($(ticks "$4") - r0) * 1000000 / HZ / n )); else echo 0; fi)"
  out+=" upstream_cpu_us=$(( ($(ticks "$UP_PID") - u0) * 1000000 / HZ / n ))"
  out+=" machine_cpu_us=$(( ($(busy) - m0) * 1000000 / HZ / n ))"
  echo "  $1: $out"
  RESULTS[$1]+="$out"$'\n'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
echo "load: wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS rounds, targets alternating"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run_one nginx "$NGX" "$NGX_PID"
  run_one hookgate-memory "$HGM" "$HGM_PID"
  run_one haproxy "$HAP" "$HAP_PID"
  run_one hookgate-redis "$HGR" "$HGR_PID" "$RDS_PID"
done

HGM_RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$HGM_PID/status)
python3 - "$IDLE_RSS_KB" "$HGM_RSS_KB" <<PY
import re, statistics, sys
raw = {k: v for k, v in [$(for k in "${!RESULTS[@]}"; do printf '("%s", """%s"""),' "$k" "${RESULTS[$k]}"; done)]}
def field(line, name):
    return float(re.search(name + r"=([0-9.]+)", line).group(1))
stats = {}
for name, text in raw.items():
    lines = [l for l in text.splitlines() if l.startswith("BENCH")]
    stats[name] = {
        "rps": statistics.median(field(l, "rps") for l in lines),
        "p50": statistics.median(field(l, "p50_us") for l in lines) / 1000,
        "p99": statistics.median(field(l, "p99_us") for l in lines) / 1000,
        "bad": sum(field(l, "non2xx") + field(l, "errors") for l in lines),
        "cpu": statistics.median(field(l, "cpu_us") + field(l, "redis_cpu_us") for l in lines),
        "up": statistics.median(field(l, "upstream_cpu_us") for l in lines),
        "all": statistics.median(field(l, "machine_cpu_us") for l in lines),
    }
print()
print("| target | req/s (median) | p50 ms | p99 ms | non-2xx + errors | CPU us/req: target | upstream | whole machine |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in ["nginx", "haproxy", "hookgate-memory", "hookgate-redis"]:
    s = stats[name]
    print(f"| {name} | {s['rps']:.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['bad']:.0f} | {s['cpu']:.0f} | {s['up']:.0f} | {s['all']:.0f} |")
print()
print("CPU per request (user + system, from /proc): hookgate-redis's target column includes redis-server;")
print("the whole machine column includes wrk, so a target's throughput is about cores / that figure.")
best = max(("nginx", "haproxy"), key=lambda n: stats[n]["rps"])
print()
# The machine drifts from round to round (all targets together), so each
# round's hookgate run is compared with the best proxy of the same round, and
# the median of those per-round ratios is the headline figure.
def rounds(name):
    return [l for l in raw[name].splitlines() if l.startswith("BENCH")]
for hg in ["hookgate-memory", "hookgate-redis"]:
    ratios = []
    for i, line in enumerate(rounds(hg)):
        proxies = [rounds(n)[i] for n in ("nginx", "haproxy")]
        ratios.append(field(line, "rps") / max(field(p, "rps") for p in proxies))
    print(f"{hg} / best proxy of each round: throughput x{statistics.median(ratios):.2f} median "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"p99 {stats[hg]['p99']:.2f} ms vs {stats[best]['p99']:.2f} ms ({best}, medians)")
print(f"hookgate idle RSS: {int(sys.argv[1]) / 1024:.1f} MB; after the memory-store runs: {int(sys.argv[2]) / 1024:.1f} MB")
PY
cargo run --release --quiet --example store_footprint -- 1000000
