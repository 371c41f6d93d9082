#!/usr/bin/env bash
# hookgate publishing to each event-bus upstream (SPEC §15) against its floor:
# examples/bare_publish, an HTTP server on the same parts that only publishes
# each body with the same client crate and settings and waits for the
# confirm. Alternating runs under the same wrk load (2 threads, 50
# connections), a nats-server -js and a redis-server of the run's own, the
# machine's RabbitMQ (127.0.0.1:5672, guest/guest) with a queue of the run's
# own; hookgate's HTTP path (nginx upstream) runs beside them for scale.
# Prints deliveries/s of each and hookgate / floor per broker.
#
#   bash bench/brokers.sh                 # 3 rounds of 5 s per target
#   ROUNDS=5 DURATION=8 bash bench/brokers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}

. bench/lib.sh
need nginx wrk redis-server nats-server

cargo build --release --quiet --bin hookgate --example bare_publish
BIN=$PWD/target/release/hookgate
BARE=$PWD/target/release/examples/bare_publish
start_upstream
start_redis
NATS=$(free_port)
nats-server -js -a 127.0.0.1 -p "$NATS" -sd "$WORK/nats" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$NATS"
QUEUE=hookgate-bench-$$
# the machine's RabbitMQ keeps the run's queue unless it is deleted: a queue
# left with millions of messages slows every later run
trap 'rabbitmqctl delete_queue "$QUEUE" >/dev/null 2>&1 || true; cleanup' EXIT
declare -A URLS=(
  [nats]="nats://127.0.0.1:$NATS/bench.hooks"
  [amqp]="amqp://guest:guest@127.0.0.1:5672/%2f?routing_key=$QUEUE"
  [redis]="redis://127.0.0.1:$RDS/0?stream=bench"
)
declare -A RPS
PORTS=()
# hookgate on the HTTP upstream, for scale
HTTP=$(free_port)
hg_config "$HTTP" memory > "$WORK/http.toml"
HOOKGATE_LOG=warn "$BIN" -c "$WORK/http.toml" & PIDS+=($!)
# the bare floors first: they make the NATS stream and the AMQP queue
for b in nats amqp redis; do
  p=$(free_port); eval "BARE_$b=$p"
  "$BARE" "127.0.0.1:$p" "${URLS[$b]}" & PIDS+=($!)
  wait_port "$p"
done
for b in nats amqp redis; do
  p=$(free_port); eval "HG_$b=$p"
  hg_config "$p" memory | sed "s|upstream = \"http://127.0.0.1:$UP/hooks\"|upstream = \"${URLS[$b]}\"|" > "$WORK/$b.toml"
  HOOKGATE_LOG=warn "$BIN" -c "$WORK/$b.toml" & PIDS+=($!)
done
for p in $HTTP $HG_nats $HG_amqp $HG_redis; do wait_port "$p"; done
sign_body "$BIN" "$WORK/http.toml"
for p in $HTTP $HG_nats $HG_amqp $HG_redis $BARE_nats $BARE_amqp $BARE_redis; do sanity "$p"; done

# Each run starts on an empty queue and stream: a backlog that grows over the
# run makes RabbitMQ (and Redis, with memory) slower for whoever runs later.
# (The NATS stream keeps at most 200k messages, see examples/bare_publish.)
reset() { # broker
  case $1 in
    amqp) rabbitmqctl purge_queue "$QUEUE" >/dev/null 2>&1 || true ;;
    redis) redis-cli -p "$RDS" DEL bench >/dev/null ;;
  esac
}
one() { # name port
  local out
  case $1 in bare-* | hookgate-*) reset "${1#*-}" ;; esac
  out=$(load "$2" 2 50 "$DURATION")
  RPS[$1]+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out") "
  echo "  $1: $(grep -o 'rps=[0-9.]*' <<<"$out") $(grep -o 'p99_us=[0-9]*' <<<"$out") $(grep -o 'non2xx=[0-9]*' <<<"$out")"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  one hookgate-http "$HTTP"
  for b in nats amqp redis; do
    # who runs first alternates by round, so neither always follows the other
    if (( r % 2 )); then
      eval "one bare-$b \$BARE_$b"; eval "one hookgate-$b \$HG_$b"
    else
      eval "one hookgate-$b \$HG_$b"; eval "one bare-$b \$BARE_$b"
    fi
  done
done
python3 - <<PY
import statistics
raw = {$(for k in "${!RPS[@]}"; do printf '"%s": [%s],' "$k" "$(sed 's/ $//; s/ /, /g' <<<"${RPS[$k]}")"; done)}
med = {k: statistics.median(v) for k, v in raw.items()}
print(f"hookgate, HTTP upstream: {med['hookgate-http']:.0f} deliveries/s")
for b in ["nats", "amqp", "redis"]:
    print(f"{b:5}: hookgate {med['hookgate-' + b]:.0f}/s, floor {med['bare-' + b]:.0f}/s, x{med['hookgate-' + b] / med['bare-' + b]:.2f} of the floor")
PY
