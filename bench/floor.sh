#!/usr/bin/env bash
# How much of hookgate's per-delivery cost is its HTTP stack and how much its
# own work: nginx and haproxy (plain proxies), examples/bare_proxy (hyper 1.x
# server + client on one single-threaded tokio runtime per core, the parts
# hookgate is built from, doing nothing but forwarding) and hookgate (memory
# store), alternating under the same wrk load in front of the same upstream.
# Prints req/s, p99 and user/system CPU microseconds per request of each.
#
#   bash bench/floor.sh            # 3 rounds of 5 s per target
#   ROUNDS=5 DURATION=8 bash bench/floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}

. bench/lib.sh
need nginx haproxy wrk

cargo build --release --quiet --bin hookgate --example bare_proxy
BIN=$PWD/target/release/hookgate
BARE=$PWD/target/release/examples/bare_proxy
start_upstream
start_proxies
HG=$(free_port); BP=$(free_port)
hg_config "$HG" memory > "$WORK/hg.toml"
HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg.toml" & PIDS+=($!); HG_PID=$!
BARE_AUTO=1 "$BARE" "127.0.0.1:$BP" "127.0.0.1:$UP" & PIDS+=($!); BP_PID=$!
for p in $HG $BP; do wait_port "$p"; done
sign_body "$BIN" "$WORK/hg.toml"
for p in $NGX $HAP $BP $HG; do sanity "$p"; done

# user and system ticks of processes and their children
split_ticks() {
  local p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do awk '{print $14, $15}' "/proc/$p/stat"; done |
    awk '{u += $1; s += $2} END {print u + 0, s + 0}'
}
declare -A RPS
one() { # name port pids...
  local name=$1 port=$2 b a out n
  shift 2
  b=$(split_ticks "$@"); out=$(load "$port" 2 50 "$DURATION"); a=$(split_ticks "$@")
  n=$(requests "$out")
  RPS[$name]+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out") "
  echo "  $name: $(grep -o 'rps=[0-9.]*' <<<"$out") $(grep -o 'p99_us=[0-9]*' <<<"$out")" \
    "$(echo "$b $a $n" | awk -v hz="$HZ" '{printf "user_us=%.1f sys_us=%.1f", ($3-$1)*1e6/hz/$5, ($4-$2)*1e6/hz/$5}')"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  one nginx "$NGX" "$NGX_PID"
  one haproxy "$HAP" "$HAP_PID"
  one bare-hyper "$BP" "$BP_PID"
  one hookgate "$HG" "$HG_PID"
done
python3 - <<PY
import statistics
raw = {$(for k in "${!RPS[@]}"; do printf '"%s": [%s],' "$k" "$(sed 's/ $//; s/ /, /g' <<<"${RPS[$k]}")"; done)}
best = [max(a, b) for a, b in zip(raw["nginx"], raw["haproxy"])]
for k in ["bare-hyper", "hookgate"]:
    ratios = [x / y for x, y in zip(raw[k], best)]
    print(f"{k} / best proxy of each round: x{statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
PY
