#!/usr/bin/env bash
# bench/record_overhead.sh — what recording costs, side by side with nginx.
#
# Per round, back to back (so ratios are paired): wrk -t1 -c32 against
#   direct        the nginx upstream (~300 B JSON reply)
#   nginxproxy    nginx as a plain reverse proxy (upstream keepalive)
#   tapedeck      `tapedeck record`, recording every exchange
#   tapedeckfwd   `tapedeck record --exclude '/*'`: the same proxy, nothing recorded
# for GET, for POST with a 500-byte JSON body, and for GET with
# `Accept-Encoding: gzip` (gzip: nginx gzips the JSON, so recording decodes
# it to scan for secrets and tokens). Every tapedeck run gets a
# fresh capture and is stopped with SIGTERM; its capture must then hold
# between wrk's completed requests and that plus wrk's connection count
# (requests in flight when wrk stopped), with 0 dropped.
#
# Env: DUR (10s) ROUNDS (3) PORT_UP (18080) PORT_NGX (18081) PORT_TD (18084)
# Needs: wrk, nginx, sqlite3, python3; builds tapedeck in release mode.
source "$(dirname "$0")/lib.sh"
PORT_TD=${PORT_TD:-18084}
CONNS=32
bench_init

ROOT="$(cd "$BENCH_DIR/.." && pwd)"
(cd "$ROOT" && cargo build --release --quiet)
TAPEDECK="$ROOT/target/release/tapedeck"
CHECKS="$WORK/capture-checks.txt"
: > "$CHECKS"

start_upstream
start_nginx_proxy
echo "# upstream pid $UP_PID, nginx proxy pid $NGX_PID"

URL_GET="/v1/chat/messages/42"
URL_POST="/v1/chat/completions"
POST_LUA="$BENCH_DIR/post.lua"


# stop_tapedeck NAME RECORDED(0|1): SIGTERM, then check the capture against wrk
stop_tapedeck() {
  local name=$1 recorded=$2 completed stored dropped hwm verdict
  hwm=$(hwm_mib "$TD_PID")
  stop_pid "$TD_PID" TERM
  completed=$(grep -oE '[0-9]+ requests in' "$WORK/$name.wrk.out" | awk '{print $1}')
  stored=$(sqlite3 "$TD_CAPTURE" 'SELECT count(*) FROM exchanges')
  dropped=$(sqlite3 "$TD_CAPTURE" 'SELECT coalesce(sum(dropped), 0) FROM captures')
  if [ "$recorded" = 1 ]; then
    if [ "$stored" -ge "$completed" ] && [ "$stored" -le $((completed + CONNS)) ] && [ "$dropped" = 0 ]; then
      verdict=ok; else verdict=MISMATCH; fi
  else
    verdict=$([ "$stored" = 0 ] && echo ok || echo MISMATCH)
  fi
  echo "| $name | $completed | $stored | $dropped | $hwm | $verdict |" | tee -a "$CHECKS"
}

# short warm-up of every path (not recorded in results)
wrk -t1 -c8 -d2s "http://127.0.0.1:$PORT_UP$URL_GET" >/dev/null
wrk -t1 -c8 -d2s "http://127.0.0.1:$PORT_NGX$URL_GET" >/dev/null

for r in $(seq 1 "$ROUNDS"); do
  for method in get post gzip; do
    case $method in
      get) path=$URL_GET; extra=() ;;
      post) path=$URL_POST; extra=(-s "$POST_LUA") ;;
      gzip) path=$URL_GET; extra=(-H "Accept-Encoding: gzip") ;;
    esac
    args=(-t1 -c$CONNS -d "$DUR" "${extra[@]}")
    PROXY_PID="" run_load "direct_$method" "$r" wrk "http://127.0.0.1:$PORT_UP$path" "${args[@]}"
    PROXY_PID=$NGX_PID run_load "nginxproxy_$method" "$r" wrk "http://127.0.0.1:$PORT_NGX$path" "${args[@]}"
    start_tapedeck "tapedeck_$method.r$r"
    PROXY_PID=$TD_PID run_load "tapedeck_$method" "$r" wrk "http://127.0.0.1:$PORT_TD$path" "${args[@]}"
    stop_tapedeck "tapedeck_$method.r$r" 1
    start_tapedeck "tapedeckfwd_$method.r$r" --exclude '/*'
    PROXY_PID=$TD_PID run_load "tapedeckfwd_$method" "$r" wrk "http://127.0.0.1:$PORT_TD$path" "${args[@]}"
    stop_tapedeck "tapedeckfwd_$method.r$r" 0
  done
done

echo
echo "## peak RSS (VmHWM, MiB): upstream nginx $(hwm_mib "$UP_PID"), nginx proxy $(hwm_mib "$NGX_PID")"
echo
echo "## tapedeck captures vs wrk (stored must be in [completed, completed + $CONNS], 0 dropped)"
echo "| run | wrk completed | stored | dropped | tapedeck peak RSS MiB | check |"
echo "|---|---|---|---|---|---|"
cat "$CHECKS"
echo
ratios=()
for m in get post gzip; do
  ratios+=(--ratio "tapedeck/nginxproxy $m=tapedeck_$m/nginxproxy_$m")
  ratios+=(--ratio "tapedeckfwd/nginxproxy $m=tapedeckfwd_$m/nginxproxy_$m")
  ratios+=(--ratio "tapedeck/tapedeckfwd $m=tapedeck_$m/tapedeckfwd_$m")
  ratios+=(--ratio "nginxproxy/direct $m=nginxproxy_$m/direct_$m")
done
"$PYTHON" "$BENCH_DIR/summarize.py" "$RESULTS" "${ratios[@]}"
! grep -q MISMATCH "$CHECKS"
