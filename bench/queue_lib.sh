# Queue-mode bench helpers, shared by bench/queue.sh and bench/queue_ab.sh
# (sourced after bench/lib.sh; $UP is the upstream's port, $RQ Redis's, and
# THREADS, CONNS, DURATION the wrk load).

# hookgate with one queue route; $1 = "always" | "none" (disk) | "redis" | "always-shm"
# (sync = "always" on a tmpfs: every fdatasync is still made, the device costs nothing), $2 = concurrency,
# $3 = port, $4 = admin port, $5 = queue dir (disk) or key prefix (redis)
qconfig() {
  local store
  if [ "$1" = redis ]; then
    store="store = \"redis\"
[queue.redis]
url = \"redis://127.0.0.1:$RQ/0\"
key_prefix = \"$(basename "$5"):\""
  else
    store="path = \"$5\"
sync = \"${1%-shm}\""
  fi
  cat <<CONF
[server]
listen = "127.0.0.1:$3"
admin_listen = "127.0.0.1:$4"
max_connections = 10000
[log]
deliveries = 10000
[queue]
$store
$(bench_source)
delivery = "queue"
concurrency = $2
${ORDER_BY:+order_by = \"$ORDER_BY\"}
CONF
}

queue_state() { # admin port -> "pending scheduled in_flight dead"
  # Parsed in bash, not with python: the drain is timed by polling this every
  # 50 ms, and a python start per poll took a large share of the 2 cores.
  local j f out=""
  j=$(curl -s "http://127.0.0.1:$1/queue")
  for f in pending scheduled in_flight dead; do
    [[ $j =~ \"$f\":([0-9]+) ]] || { echo "no $f in /queue: $j" >&2; return 1; }
    out+="${BASH_REMATCH[1]} "
  done
  echo "$out"
}

# The Redis server of the Redis queue store runs (AOF, appendfsync everysec),
# its port in RQ.
start_queue_redis() {
  RQ=$(free_port)
  mkdir -p "$WORK/redis"
  redis-server --port "$RQ" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec --dir "$WORK/redis" >/dev/null & PIDS+=($!); RQ_PID=$!
  wait_port "$RQ"
}

# One ingest, then its drain: hookgate binary $1, store $2 ("always" | "none"
# | "redis" | "always-shm"), a label $3 (unique per call). Sets INGEST_OUT (wrk's BENCH line),
# DRAIN_RATE (deliveries/s) and, on Redis, DRAIN_REDIS_US (Redis's CPU time per
# delivery drained, user + system, from /proc); prints them.
ingest_then_drain() {
  local bin=$1 sync=$2 tag=$3 P A Q HG code bad pending t0 t1 deadline p s f d r0=0 r1=0 h0 h1
  P=$(free_port); A=$(free_port); Q="$WORK/q-$tag"
  [[ $sync == *-shm ]] && Q="/dev/shm/hookgate-bench-$$-$tag"
  qconfig "$sync" 0 "$P" "$A" "$Q" > "$WORK/hg-$tag.toml"
  HOOKGATE_LOG=warn "$bin" -c "$WORK/hg-$tag.toml" & PIDS+=($!); HG=$!
  wait_port "$P"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$P/webhooks/tampa" \
    -H "X-Webhook-Signature: $BENCH_SIG" -H "X-Delivery-ID: sanity-$tag" --data-binary @"$BENCH_BODY")
  [ "$code" = 202 ] || { echo "queue route answered $code" >&2; exit 1; }
  INGEST_OUT=$(load "$P" "$THREADS" "$CONNS" "$DURATION")
  bad=$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$INGEST_OUT")
  [ "$bad" = 0 ] || { echo "$bad ingest requests were not acked" >&2; exit 1; }
  echo "  $(basename "$bin") ingest sync=$sync: $INGEST_OUT"
  read -r pending _ _ _ <<<"$(queue_state "$A")"
  # Drain: raise concurrency, reload, time until nothing is left.
  sed -i 's/^concurrency = 0$/concurrency = 64/' "$WORK/hg-$tag.toml"
  [ "$sync" = redis ] && r0=$(ticks "$RQ_PID")
  [ "$sync" = redis ] && [ -n "${DRAIN_STATS:-}" ] && redis-cli -p "$RQ" CONFIG RESETSTAT >/dev/null
  h0=$(ticks "$HG")
  t0=$(date +%s.%N)
  kill -HUP "$HG"
  deadline=$((SECONDS + 300))
  while :; do
    read -r p s f d <<<"$(queue_state "$A")"
    [ "$((p + s + f))" = 0 ] && break
    [ "$SECONDS" -lt "$deadline" ] || { echo "drain did not finish in 300 s ($p $s $f left)" >&2; exit 1; }
    sleep 0.05
  done
  t1=$(date +%s.%N)
  [ "$sync" = redis ] && r1=$(ticks "$RQ_PID")
  h1=$(ticks "$HG")
  # DRAIN_STATS=1: Redis's commands over the drain, per delivery (INFO commandstats).
  if [ "$sync" = redis ] && [ -n "${DRAIN_STATS:-}" ]; then
    redis-cli -p "$RQ" INFO commandstats | python3 -c "
import re, sys
for l in sys.stdin:
    m = re.match(r'cmdstat_(\S+):calls=(\d+),usec=(\d+)', l)
    if m: print(f'    {m[1]:>12}: {int(m[2]) / $pending:6.3f} calls, {int(m[3]) / $pending:6.2f} us per delivery')
"
  fi
  [ "$d" = 0 ] || { echo "$d deliveries went dead while draining" >&2; exit 1; }
  DRAIN_RATE=$(python3 -c "print(f'{$pending / ($t1 - $t0):.1f}')")
  DRAIN_REDIS_US=$(python3 -c "print(f'{($r1 - $r0) * 1e6 / $HZ / $pending:.1f}')")
  DRAIN_HOOKGATE_US=$(python3 -c "print(f'{($h1 - $h0) * 1e6 / $HZ / $pending:.1f}')")
  local cpu="; hookgate: $DRAIN_HOOKGATE_US us of CPU per delivery"
  [ "$sync" = redis ] && cpu+=", Redis: $DRAIN_REDIS_US us"
  echo "  $(basename "$bin") drain sync=$sync: $pending deliveries in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s = $DRAIN_RATE/s$cpu"
  kill "$HG"; wait "$HG" 2>/dev/null || true
  rm -rf "$Q"
}
