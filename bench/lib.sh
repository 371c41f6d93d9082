# Shared by bench/run.sh, bench/ab.sh and bench/instructions.sh (sourced, not run).
# Everything listens on 127.0.0.1 and lives in a temporary folder removed on exit.

# Installs the Debian packages named when their command is missing.
need() {
  local missing=() c
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # KEEP_WORK=1 keeps the run's files (callgrind output, configs) for a look afterwards.
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

# The upstream: nginx answering 200 "ok". Sets UP (port) and UP_PID.
start_upstream() {
  UP=$(free_port)
  mkdir -p "$WORK/up"
  cat > "$WORK/up/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_buffer_size 64k;
  server { listen 127.0.0.1:$UP reuseport; keepalive_requests 1000000; location / { return 200 "ok"; } }
}
CONF
  nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' & PIDS+=($!); UP_PID=$!
  wait_port "$UP"
}

# nginx and haproxy as plain reverse proxies in front of $UP (2 workers/threads
# each, keep-alive to the upstream). Sets NGX, HAP (ports), NGX_PID, HAP_PID.
# With a directory argument they terminate TLS (h2 + http/1.1) with its
# chain.pem/leaf.key (haproxy: haproxy.pem, chain and key in one file).
start_proxies() {
  local certs=${1:-} ngx_listen="" ngx_tls="" hap_tls="" px="$WORK/px"
  if [ -n "$certs" ]; then
    px="$WORK/px-tls"
    ngx_listen=" ssl http2"
    ngx_tls="ssl_certificate $certs/chain.pem; ssl_certificate_key $certs/leaf.key; ssl_protocols TLSv1.2 TLSv1.3;"
    hap_tls=" ssl crt $certs/haproxy.pem alpn h2,http/1.1"
  fi
  NGX=$(free_port); HAP=$(free_port)
  mkdir -p "$px"
  cat > "$px/nginx.conf" <<CONF
worker_processes 2;
pid $px/nginx.pid;
error_log $px/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_buffer_size 64k;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX$ngx_listen;
    $ngx_tls
    keepalive_requests 1000000;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
  nginx -p "$px" -c "$px/nginx.conf" -g 'daemon off;' & PIDS+=($!); NGX_PID=$!
  cat > "$px/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn 4096
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP$hap_tls
  default_backend app
backend app
  server s1 127.0.0.1:$UP
CONF
  haproxy -f "$px/haproxy.cfg" -db & PIDS+=($!); HAP_PID=$!
  wait_port "$NGX"; wait_port "$HAP"
}

# A redis-server that keeps nothing on disk. Sets RDS (port) and RDS_PID.
start_redis() {
  RDS=$(free_port)
  redis-server --port "$RDS" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null & PIDS+=($!); RDS_PID=$!
  wait_port "$RDS"
}

# The benches' source: tampa, one route to the upstream on $UP (more route
# keys may follow it).
# The benchmark source. Default: tampa with the delivery ID taken from the
# X-Delivery-ID header (as before round 3), so one pre-signed body sent with a
# new ID per request is a new delivery each time; that header is unsigned, so
# the body-digest claim is off (it would make every request but the first a
# duplicate). BENCH_SOURCE=token: a token source (no HMAC) whose body changes
# per request (delivery.lua), with the body-digest claim as BENCH_DEDUPE_BODY
# says (true/false): what that claim costs.
bench_source() {
  if [ "${BENCH_SOURCE:-}" = token ]; then
    cat <<CONF
[sources.tampa]
path = "/webhooks/tampa"
provider = "generic"
secrets = ["bench-secret"]
dedupe_body = ${BENCH_DEDUPE_BODY:-false}
[sources.tampa.verify]
scheme = "token"
signature_header = "X-Webhook-Signature"
id = "header:X-Delivery-ID"
event_type = "json:/type"
[[sources.tampa.routes]]
events = ["*"]
upstream = "http://127.0.0.1:$UP/hooks"
CONF
    return
  fi
  # BENCH_LEGACY=1: for builds before round 3 (their tampa read the header first).
  local id_from_header='dedupe_body = false
[sources.tampa.verify]
id = "header:X-Delivery-ID"'
  # BENCH_TYPE_HEADER=1: the event type from X-Event-Type too, as before round 3
  # (the same work as a legacy build, plus round 3's checks).
  [ "${BENCH_TYPE_HEADER:-}" = 1 ] && id_from_header="$id_from_header
event_type = \"header:X-Event-Type\""
  [ "${BENCH_LEGACY:-}" = 1 ] && id_from_header=
  cat <<CONF
[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["bench-secret"]
tolerance = "1h"
$( [ "${BENCH_ROUTES:-}" = fanout3 ] && echo 'match = "all"' )
$id_from_header
$(bench_routes)
CONF
}

# The routes (SPEC §14) of bench_source, by BENCH_ROUTES: plain (default: one
# route), filter (one route with a two-field filter that holds), transform (one
# route with a jq program over the bench body), fanout3 (match = "all": three
# sync routes to the same upstream).
bench_routes() {
  local route="[[sources.tampa.routes]]
events = [\"*\"]
upstream = \"http://127.0.0.1:$UP/hooks\""
  case "${BENCH_ROUTES:-plain}" in
    plain) echo "$route" ;;
    filter) printf '%s\nfilter = { "json:/data/order/currency" = "eur", "json:/data/order/amount" = { gt = 0 } }\n' "$route" ;;
    transform) printf "%s\ntransform = '{order: .data.order.id, total: (.data.order.amount / 100), skus: [.data.order.items[] | .sku]}'\n" "$route" ;;
    fanout3) for n in billing analytics audit; do printf '%s\nname = "%s"\n' "$route" "$n"; done ;;
    *) echo "unknown BENCH_ROUTES=$BENCH_ROUTES" >&2; exit 1 ;;
  esac
}

# hookgate config: listen port, store ("memory" or "redis"; redis needs RDS).
hg_config() {
  cat <<CONF
[server]
listen = "127.0.0.1:$1"
max_connections = 10000
[dedupe]
store = "$2"
[dedupe.redis]
url = "redis://127.0.0.1:${RDS:-6379}/0"
$(observability)
$(bench_source)
CONF
}

# SPEC §17's switches, off unless set: BENCH_BODIES=64MB ([log] bodies),
# BENCH_OTEL=1 ([otel] to the bench upstream, which answers every POST),
# BENCH_ALERTS=1 (an [[alerts]] table; only failures send anything).
observability() {
  [ -n "${BENCH_BODIES:-}" ] && printf '[log]\nbodies = "%s"\n' "$BENCH_BODIES"
  [ "${BENCH_OTEL:-}" = 1 ] && printf '[otel]\nendpoint = "http://127.0.0.1:%s"\n' "$UP"
  [ "${BENCH_ALERTS:-}" = 1 ] && printf '[[alerts]]\nurl = "http://127.0.0.1:%s/alerts"\n' "$UP"
  true
}

# One pre-signed body (fresh timestamp; bench/delivery.lua varies the ID per
# request). Exports BENCH_BODY and BENCH_SIG for delivery.lua.
sign_body() { # hookgate-binary config
  printf '{"id":"bench","type":"dev.tampa.event.created","timestamp":"%s","data":{"order":{"id":"ord_123","amount":4200,"currency":"eur","items":[{"sku":"a-1","qty":2},{"sku":"b-7","qty":1}]}}}' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$WORK/body.json"
  export BENCH_BODY="$WORK/body.json"
  if [ "${BENCH_SOURCE:-}" = token ]; then
    BENCH_SIG=bench-secret
    export BENCH_UNIQUE_BODY=1
  else
    BENCH_SIG=$("$1" sign -c "$2" --source tampa "$WORK/body.json" | awk -F': ' 'tolower($1)=="x-webhook-signature" {print $2}')
  fi
  export BENCH_SIG
}

# Fails unless the target on this port answers 200 to a benchmark delivery.
sanity() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/webhooks/tampa" \
    -H "X-Webhook-Signature: $BENCH_SIG" -H "X-Delivery-ID: sanity-$1-$RANDOM" -H 'Content-Type: application/json' --data-binary @"$BENCH_BODY")
  [ "$code" = 200 ] || { echo "target on port $1 answered $code" >&2; exit 1; }
}

# CPU time (user + system, in clock ticks) of processes and their children
# (nginx's workers), read from /proc.
ticks() {
  local t=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# Busy ticks of the whole machine (wrk and everything else included).
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
HZ=$(getconf CLK_TCK)

# The request count of a BENCH line (load's output).
requests() { sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$1"; }

# One bounded wrk run against a target; prints its BENCH line.
load() { # port threads conns seconds [scheme] [extra wrk arguments...]
  local port=$1 threads=$2 conns=$3 secs=$4 scheme=${5:-http}
  shift $(($# < 5 ? $# : 5))
  timeout $((secs + 30)) wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s bench/delivery.lua "$@" \
    "$scheme://127.0.0.1:$port/webhooks/tampa" | grep '^BENCH'
}
