#!/usr/bin/env bash
# TLS termination on loopback (SPEC §7): hookgate ([server.tls], memory store)
# against nginx and haproxy terminating TLS with the same certificate (ECDSA
# P-256, made here with openssl) and proxying to the same nginx `return 200`
# upstream, in the same run, alternating:
#
# examples/bare_proxy terminates TLS with hookgate's own listener config and
# forwards without any of hookgate's work (the floor: hyper + rustls + tokio).
#
# - keep-alive deliveries/s (wrk over HTTPS, 50 connections kept open);
# - new connections/s (`Connection: close`: one full TLS handshake per request);
# - hookgate forwarding over plain HTTP to the upstream on loopback TCP and on a
#   Unix socket (the sidecar case), for the gain of the socket.
#
#   bash bench/tls.sh                 # 3 rounds of 6 s per target
#   ROUNDS=1 DURATION=3 bash bench/tls.sh
#
# Needs nginx, haproxy, wrk and openssl (Debian packages; installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}

. bench/lib.sh
need nginx haproxy wrk openssl

cargo build --release --quiet --bin hookgate --example bare_proxy
BIN=$PWD/target/release/hookgate
start_upstream

# The same certificate for everyone: a CA and a P-256 leaf for 127.0.0.1.
C="$WORK/certs"; mkdir -p "$C"
(
  cd "$C"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 2 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 1 -extfile san.ext 2>/dev/null
  cat leaf.pem ca.pem > chain.pem
  cat chain.pem leaf.key > haproxy.pem
)

start_proxies "$C"
HGT=$(free_port); HGTCP=$(free_port); HGUNIX=$(free_port); BP=$(free_port)

# An upstream on a Unix socket too (same nginx `return 200`).
mkdir -p "$WORK/ups"
cat > "$WORK/ups/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/ups/nginx.pid;
error_log $WORK/ups/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_buffer_size 64k;
  server { listen unix:$WORK/ups/app.sock; keepalive_requests 1000000; location / { return 200 "ok"; } }
}
CONF
nginx -p "$WORK/ups" -c "$WORK/ups/nginx.conf" -g 'daemon off;' & PIDS+=($!)

hg_config "$HGT" memory > "$WORK/hg-tls.toml"
printf '[server.tls]\ncert = "%s"\nkey = "%s"\n' "$C/chain.pem" "$C/leaf.key" >> "$WORK/hg-tls.toml"
hg_config "$HGTCP" memory > "$WORK/hg-tcp.toml"
hg_config "$HGUNIX" memory | sed "s|^upstream = .*|upstream = \"http://unix:$WORK/ups/app.sock:/hooks\"|" > "$WORK/hg-unix.toml"
for f in tls tcp unix; do HOOKGATE_LOG=warn "$BIN" -c "$WORK/hg-$f.toml" & PIDS+=($!); done
BARE_AUTO=1 BARE_TLS="$C/chain.pem:$C/leaf.key" "$PWD/target/release/examples/bare_proxy" "127.0.0.1:$BP" "127.0.0.1:$UP" & PIDS+=($!)
for p in $NGX $HAP $HGT $HGTCP $HGUNIX $BP; do wait_port "$p"; done
for i in $(seq 1 100); do [ -S "$WORK/ups/app.sock" ] && break; sleep 0.05; done
sign_body "$BIN" "$WORK/hg-tcp.toml"
for p in $HGTCP $HGUNIX; do sanity "$p"; done

declare -A RPS P99
run() { # name port scheme [wrk args]
  local name=$1 port=$2 scheme=$3 out
  shift 3
  out=$(load "$port" "$THREADS" "$CONNS" "$DURATION" "$scheme" "$@")
  echo "  $name: $out"
  RPS[$name]+="$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out") "
  P99[$name]+="$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$out") "
  [ "$(sed -n 's/.*non2xx=\([0-9]*\).*/\1/p' <<<"$out")" = 0 ] || { echo "$name: non-2xx answers" >&2; exit 1; }
}

echo "machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -c$CONNS -d${DURATION}s; $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for t in nginx:$NGX haproxy:$HAP bare-hyper:$BP hookgate:$HGT; do
    run "keepalive-${t%%:*}" "${t##*:}" https
    run "newconn-${t%%:*}" "${t##*:}" https -H "Connection: close"
  done
  run upstream-tcp "$HGTCP" http
  run upstream-unix "$HGUNIX" http
done

python3 - <<PY
import statistics
def parse(text): return [float(x) for x in text.split()]
rps = {$(for k in "${!RPS[@]}"; do printf '"%s": parse("%s"),' "$k" "${RPS[$k]}"; done)}
p99 = {$(for k in "${!P99[@]}"; do printf '"%s": parse("%s"),' "$k" "${P99[$k]}"; done)}
m = {k: statistics.median(v) for k, v in rps.items()}
q = {k: statistics.median(v) / 1000 for k, v in p99.items()}
print()
print("| target | keep-alive deliveries/s | p99 ms | new connections/s | p99 ms |")
print("|---|---:|---:|---:|---:|")
for t in ["nginx", "haproxy", "bare-hyper", "hookgate"]:
    print(f"| {t} | {m['keepalive-' + t]:.0f} | {q['keepalive-' + t]:.2f} | {m['newconn-' + t]:.0f} | {q['newconn-' + t]:.2f} |")
best_k = max(m["keepalive-nginx"], m["keepalive-haproxy"])
best_n = max(m["newconn-nginx"], m["newconn-haproxy"])
print()
for t in ["bare-hyper", "hookgate"]:
    print(f"{t} / best proxy: keep-alive x{m['keepalive-' + t] / best_k:.2f}, new connections x{m['newconn-' + t] / best_n:.2f}")
print(f"hookgate to the upstream: loopback TCP {m['upstream-tcp']:.0f}/s, Unix socket {m['upstream-unix']:.0f}/s "
      f"(x{m['upstream-unix'] / m['upstream-tcp']:.2f}); p99 {q['upstream-tcp']:.2f} vs {q['upstream-unix']:.2f} ms")
PY
