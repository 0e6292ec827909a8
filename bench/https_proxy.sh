#!/usr/bin/env bash
# bench/https_proxy.sh — HTTPS through tapedeck next to HTTPS through nginx.
#
# One self-signed certificate (openssl, EC P-256) for both proxies. Per
# round, back to back: wrk -t1 -c32 over HTTPS (TLS 1.3; connections kept,
# so this measures encrypted request traffic, not handshakes) against
#   nginxtls     nginx terminating TLS, proxying to the plain nginx upstream
#   tapedeck     `tapedeck record --tls-cert --tls-key`, recording everything
#   tapedeckfwd  the same with `--exclude '/*'`: TLS and forwarding only
# GET requests of the ~300-byte chat message. Target: tapedeck ≥ 0.85×
# nginx's requests/s.
#
# Env: DUR (10s) ROUNDS (3) PORT_UP (18080) PORT_NGXS (18085) PORT_TD (18086)
# Needs: wrk, nginx, openssl, python3; builds tapedeck in release mode.
source "$(dirname "$0")/lib.sh"
PORT_NGXS=${PORT_NGXS:-18085}
PORT_TD=${PORT_TD:-18086}
bench_init

ROOT="$(cd "$BENCH_DIR/.." && pwd)"
(cd "$ROOT" && cargo build --release --quiet)
TAPEDECK="$ROOT/target/release/tapedeck"

CERT="$WORK/cert.pem"
KEY="$WORK/key.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$KEY" -out "$CERT" 2>/dev/null

start_upstream

PORT_NGX=$PORT_NGXS start_nginx_proxy "$CERT" "$KEY"

# start_tapedeck NAME [extra record args...]
start_tapedeck() {
  local name=$1; shift
  require_free_port "$PORT_TD"
  rm -f "$WORK/$name.db"*
  "$TAPEDECK" record --upstream "http://127.0.0.1:$PORT_UP" --listen "127.0.0.1:$PORT_TD" \
    --tls-cert "$CERT" --tls-key "$KEY" --capture "$WORK/$name.db" "$@" >"$WORK/$name.log" 2>&1 &
  TD_PID=$!; PIDS+=("$TD_PID")
  wait_port "$PORT_TD" "$TD_PID"
}

URL="/v1/chat/messages/42"
args=(-t1 -c32 -d "$DUR")
wrk -t1 -c8 -d2s "https://127.0.0.1:$PORT_NGXS$URL" >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  PROXY_PID=$NGX_PID run_load "nginxtls_get" "$r" wrk "https://127.0.0.1:$PORT_NGXS$URL" "${args[@]}"
  start_tapedeck "tapedeck.r$r"
  PROXY_PID=$TD_PID run_load "tapedeck_get" "$r" wrk "https://127.0.0.1:$PORT_TD$URL" "${args[@]}"
  stop_pid "$TD_PID" TERM
  echo "  capture tapedeck.r$r: $(sqlite3 "$WORK/tapedeck.r$r.db" 'SELECT count(*) FROM exchanges' 2>/dev/null || echo '?') exchanges"
  start_tapedeck "tapedeckfwd.r$r" --exclude '/*'
  PROXY_PID=$TD_PID run_load "tapedeckfwd_get" "$r" wrk "https://127.0.0.1:$PORT_TD$URL" "${args[@]}"
  stop_pid "$TD_PID" TERM
done

"$PYTHON" "$BENCH_DIR/summarize.py" "$RESULTS" \
  --ratio "tapedeck/nginxtls get=tapedeck_get/nginxtls_get" \
  --ratio "tapedeckfwd/nginxtls get=tapedeckfwd_get/nginxtls_get"
