# bench/lib.sh — shared helpers, sourced by the bench/*.sh scripts.
#
# Everything listens on 127.0.0.1 only, on ports 18080-18083 (override with
# PORT_UP / PORT_NGX / PORT_MITM / PORT_HAP, keep them in 18000-18999).
# Every process a script starts is recorded in PIDS and stopped by PID from
# an EXIT trap. Logs and raw outputs go to /tmp/tapedeck-bench/<script-name>/.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT_UP=${PORT_UP:-18080}     # nginx upstream ("chat backend")
PORT_NGX=${PORT_NGX:-18081}   # nginx reverse proxy -> upstream
PORT_MITM=${PORT_MITM:-18082} # mitmdump reverse proxy -> upstream (recording)
PORT_HAP=${PORT_HAP:-18083}   # haproxy reverse proxy -> upstream
DUR=${DUR:-10s}               # wrk/oha/hey duration per run
ROUNDS=${ROUNDS:-3}           # repetitions; summaries report the median
NGX_PROXY_WORKERS=${NGX_PROXY_WORKERS:-1}
HAP_THREADS=${HAP_THREADS:-1}
# TD_WORKERS=N runs tapedeck with N tokio worker threads (tokio reads
# TOKIO_WORKER_THREADS); unset, tokio starts one per core, as in production.
# TD_WORKERS=1 gives tapedeck the one worker nginx and haproxy get here.
if [ -n "${TD_WORKERS:-}" ]; then
  export TOKIO_WORKER_THREADS=$TD_WORKERS
fi
PYTHON=${PYTHON:-python3}

SCRIPT_NAME="$(basename "$0" .sh)"
WORK="${BENCH_WORK:-/tmp/tapedeck-bench}/$SCRIPT_NAME"
RESULTS="$WORK/results.jsonl"
CLK_TCK=$(getconf CLK_TCK)

# python that has mitmproxy importable (the one behind the mitmdump launcher)
mitm_python() {
  local m; m="$(command -v mitmdump)" || { echo "mitmdump not found" >&2; return 1; }
  echo "$(dirname "$(readlink -f "$m")")/python"
}

PIDS=()
cleanup() {
  local i pid
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[i]}
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_init() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
  : > "$RESULTS"
  echo "# $SCRIPT_NAME: logs in $WORK; DUR=$DUR ROUNDS=$ROUNDS; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# stop one process we started: stop_pid PID [SIGNAL]
stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for i in "${!PIDS[@]}"; do [ "${PIDS[i]}" = "$pid" ] && PIDS[i]=""; done
  return 0
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_port() {
  if port_busy "$1"; then echo "port $1 on 127.0.0.1 is already in use; set another PORT_* in 18000-18999" >&2; exit 1; fi
}
wait_port() {
  local port=$1 pid=$2 tries=$(( ${3:-15} * 10 ))
  for _ in $(seq 1 "$tries"); do
    port_busy "$port" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "process $pid for port $port died" >&2; return 1; }
    sleep 0.1
  done
  echo "timeout waiting for port $port" >&2; return 1
}

# PID plus its direct children (nginx master + workers)
proc_tree() { local p; for p in "$@"; do echo "$p"; ps -o pid= --ppid "$p" 2>/dev/null | tr -d ' '; done; }
# summed utime+stime in seconds
cpu_s() {
  local t=0 p f
  for p in $(proc_tree "$@"); do
    [ -r "/proc/$p/stat" ] || continue
    f=$(sed 's/^.*) //' "/proc/$p/stat")   # fields after "(comm) "; utime=12th, stime=13th here
    t=$((t + $(echo "$f" | awk '{print $12 + $13}')))
  done
  awk -v t="$t" -v h="$CLK_TCK" 'BEGIN{printf "%.2f", t / h}'
}
# summed peak RSS (VmHWM) in MiB over a process tree
hwm_mib() {
  local t=0 p k
  for p in $(proc_tree "$@"); do
    k=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${k:-0}))
  done
  awk -v t="$t" 'BEGIN{printf "%.1f", t / 1024}'
}
# whole-machine busy CPU seconds so far (all processes, both cores)
machine_busy_s() {
  awk -v h="$CLK_TCK" '/^cpu /{printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / h; exit}' /proc/stat
}
upstream_requests() {
  curl -s --max-time 2 "http://127.0.0.1:$PORT_UP/nginx_status" | awk 'NR==3{print $3}'
}

# start_tapedeck NAME [extra record args...]: `$TAPEDECK record` on PORT_TD
# in front of the upstream, into a fresh capture $WORK/NAME.db (TD_CAPTURE);
# its PID in TD_PID
start_tapedeck() {
  local name=$1; shift
  require_free_port "$PORT_TD"
  TD_CAPTURE="$WORK/$name.db"
  rm -f "$TD_CAPTURE"*
  "$TAPEDECK" record --upstream "http://127.0.0.1:$PORT_UP" --listen "127.0.0.1:$PORT_TD" \
    --capture "$TD_CAPTURE" "$@" >"$WORK/$name.log" 2>&1 &
  TD_PID=$!; PIDS+=("$TD_PID")
  wait_port "$PORT_TD" "$TD_PID"
}

# ---------------------------------------------------------------- servers
# run_nginx NAME WORKERS PORT: nginx with WORKERS workers and, inside its
# `http` block, the directives read from stdin (logs, pid and temp paths
# under $WORK/NAME are set here); waits for PORT; its PID in NGINX_PID.
run_nginx() {
  local d="$WORK/$1" workers=$2 port=$3; mkdir -p "$d"
  {
    cat <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
EOF
    cat
    echo "}"
  } > "$d/nginx.conf"
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
  wait_port "$port" "$NGINX_PID"
}

# a ~300-byte chat-message-like JSON body (no $, no single quotes: nginx literal)
response_body() {
  "$PYTHON" - <<'EOF'
import json
msg = {"id": "msg_01HZX3K9Q2", "object": "chat.message", "created": 1700000000,
       "model": "bench-chat-1", "role": "assistant",
       "content": "", "finish_reason": "stop",
       "usage": {"prompt_tokens": 42, "completion_tokens": 57}}
base = len(json.dumps(msg, separators=(",", ":")))
msg["content"] = ("Sure. Here is a short answer to your question about the proxy. " * 5)[: 300 - base]
print(json.dumps(msg, separators=(",", ":")), end="")
EOF
}

start_upstream() {
  require_free_port "$PORT_UP"
  local body; body="$(response_body)"
  run_nginx ngx-up 1 "$PORT_UP" <<EOF
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  client_body_buffer_size 16k;
  # JSON gzipped for clients that ask (wrk does only when told to).
  gzip on; gzip_types application/json; gzip_min_length 20; gzip_comp_level 1;
  server {
    listen 127.0.0.1:$PORT_UP backlog=4096;
    location = /nginx_status { stub_status; }
    # GET and POST (body read and discarded) both get the fixed chat message
    location / {
      default_type application/json;
      return 200 '$body';
    }
  }
EOF
  UP_PID=$NGINX_PID
  sleep 0.2
}

# start_nginx_proxy [CERT KEY]: nginx on PORT_NGX proxying to the upstream;
# with a PEM certificate and key it terminates TLS 1.3 there.
start_nginx_proxy() {
  require_free_port "$PORT_NGX"
  local ssl="" tls=""
  if [ $# -ge 2 ]; then
    ssl=" ssl"
    tls="ssl_certificate $1; ssl_certificate_key $2; ssl_protocols TLSv1.3;"
  fi
  run_nginx ngx-proxy "$NGX_PROXY_WORKERS" "$PORT_NGX" <<EOF
  keepalive_requests 1000000;
  keepalive_timeout 65s;
  upstream chat_backend {
    server 127.0.0.1:$PORT_UP;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$PORT_NGX$ssl backlog=4096;
    $tls
    location / {
      proxy_pass http://chat_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
EOF
  NGX_PID=$NGINX_PID
  sleep 0.2
}

start_haproxy() {
  require_free_port "$PORT_HAP"
  local d="$WORK/haproxy"; mkdir -p "$d"
  cat > "$d/haproxy.cfg" <<EOF
global
  nbthread $HAP_THREADS
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$PORT_HAP
  default_backend be
backend be
  server up 127.0.0.1:$PORT_UP
EOF
  haproxy -db -f "$d/haproxy.cfg" >"$d/haproxy.log" 2>&1 &
  HAP_PID=$!; PIDS+=("$HAP_PID")
  wait_port "$PORT_HAP" "$HAP_PID"
  sleep 0.2
}

# start_mitmdump [FLOWFILE] — reverse mode, quiet (-q: no per-flow console output),
# writes every flow to FLOWFILE (no FLOWFILE: forwarding only, nothing recorded).
# Startup is slow (imports take seconds on a loaded 2-core box): wait up to 60 s.
start_mitmdump() {
  require_free_port "$PORT_MITM"
  local conf="$WORK/mitm-confdir"; mkdir -p "$conf"
  local w=(); [ -n "${1:-}" ] && w=(-w "$1")
  mitmdump -q --mode "reverse:http://127.0.0.1:$PORT_UP" --listen-host 127.0.0.1 -p "$PORT_MITM" \
    --set confdir="$conf" "${w[@]}" >>"$WORK/mitmdump.log" 2>&1 &
  MITM_PID=$!; PIDS+=("$MITM_PID")
  wait_port "$PORT_MITM" "$MITM_PID" 60
  sleep 0.3
}

# ---------------------------------------------------------------- load runs
# run_load SCENARIO ROUND TOOL URL [tool args...]
#   TOOL: wrk | hey | oha. Records client CPU (from /usr/bin/time), server-side
#   CPU of $UP_PID and of ${PROXY_PID:-} (set by the caller), and the upstream's
#   own request counter (nginx stub_status) into $RESULTS as one JSON line.
run_load() {
  local scen=$1 round=$2 tool=$3 url=$4; shift 4
  local out="$WORK/$scen.r$round.$tool.out"
  local u0 u1 cu0 cu1 cp0=0 cp1=0 rc=0 m0 m1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  u0=$(upstream_requests); cu0=$(cpu_s "$UP_PID"); m0=$(machine_busy_s)
  [ -n "${PROXY_PID:-}" ] && cp0=$(cpu_s "$PROXY_PID")
  case "$tool" in
    wrk) /usr/bin/time -f '%e %U %S %M' -o "$out.time" wrk --latency "$@" "$url" >"$out" 2>&1 || rc=$? ;;
    hey) /usr/bin/time -f '%e %U %S %M' -o "$out.time" hey "$@" "$url" >"$out" 2>&1 || rc=$? ;;
    oha) /usr/bin/time -f '%e %U %S %M' -o "$out.time" oha --no-tui --output-format json "$@" "$url" >"$out" 2>"$out.err" || rc=$? ;;
    *) echo "unknown tool $tool" >&2; return 1 ;;
  esac
  m1=$(machine_busy_s); cu1=$(cpu_s "$UP_PID")
  [ -n "${PROXY_PID:-}" ] && cp1=$(cpu_s "$PROXY_PID")
  u1=$(upstream_requests)
  "$PYTHON" "$BENCH_DIR/parse_load.py" --tool "$tool" --file "$out" --time-file "$out.time" \
    --scenario "$scen" --round "$round" --rc "$rc" \
    --upstream-requests "$((u1 - u0 - 1))" \
    --upstream-cpu "$(awk -v a="$cu0" -v b="$cu1" 'BEGIN{printf "%.2f", b - a}')" \
    --proxy-cpu "$(awk -v a="$cp0" -v b="$cp1" 'BEGIN{printf "%.2f", b - a}')" \
    --machine-busy-cpu "$(awk -v a="$m0" -v b="$m1" 'BEGIN{printf "%.2f", b - a}')" --load1 "$load" \
    --args "$*" ${EXTRA_JSON:+--extra "$EXTRA_JSON"} | tee -a "$RESULTS" | "$PYTHON" "$BENCH_DIR/parse_load.py" --oneline
}
