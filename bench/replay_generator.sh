#!/usr/bin/env bash
# bench/replay_generator.sh — replay as a load generator, side by side with
# wrk and oha, plus timing accuracy and a 1,000,000-exchange capture.
#
#  1. throughput: a capture of 30,000 small GETs (300 sessions x 100)
#     replayed at multiplier 10, speed 10000 (everything due at once),
#     looped to fill DUR, with 32 in flight, against the nginx upstream,
#     alternating with `wrk -t1 -c32`, `oha -c32` and the bare client the
#     generator is built on (`cargo bench --bench client_floor`, pooled
#     hyper-util client and bare hyper, 32 tasks); with and without
#     correlation. ROUNDS rounds.
#  2. timing: 20,000 one-request sessions planned 0.5 ms apart (2,000
#     requests/s for 10 s) at 1x; the report's send lag (actual − planned).
#  3. scale: 1,000,000 exchanges (10,000 sessions x 100); start time (launch
#     to the stage's start) and peak RSS of a 10 s replay.
#
# Env: DUR (10s) ROUNDS (3) PORT_UP (18080) OHA (oha binary; skipped if absent)
# Needs: wrk, nginx, python3; builds tapedeck in release mode.
source "$(dirname "$0")/lib.sh"
bench_init
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
(cd "$ROOT" && cargo build --release --quiet \
  && cargo bench --no-run --quiet --bench synth_capture --bench client_floor 2>/dev/null)
TAPEDECK="$ROOT/target/release/tapedeck"
SYNTH=$(ls -t "$ROOT"/target/release/deps/synth_capture-* | grep -v '\.d$' | head -1)
FLOOR=$(ls -t "$ROOT"/target/release/deps/client_floor-* | grep -v '\.d$' | head -1)
OHA=${OHA:-$(command -v oha || true)}
[ -n "$OHA" ] && export PATH="$(dirname "$OHA"):$PATH"
DUR_S=${DUR%s}

start_upstream
URL="http://127.0.0.1:$PORT_UP/v1/chat/messages/42"

"$SYNTH" "$WORK/throughput.db" 300 100 1000000 10000
"$SYNTH" "$WORK/timing.db" 20000 1 1000000 500
"$SYNTH" "$WORK/million.db" 10000 100 1000000 10000

# replay_run NAME ARGS...: one replay; prints a results line like run_load's
replay_run() {
  local name=$1 round=$2; shift 2
  local out="$WORK/$name.r$round" cu0 cu1 t0 t1
  cu0=$(cpu_s "$UP_PID"); t0=$(date +%s%N)
  /usr/bin/time -f '%e %U %S %M' -o "$out.time" "$TAPEDECK" replay "$@" --target "http://127.0.0.1:$PORT_UP" \
    --report "$out.json" >"$out.log" 2>&1 || true
  t1=$(date +%s%N); cu1=$(cpu_s "$UP_PID")
  "$PYTHON" - "$out.json" "$out.time" "$name" "$round" "$t0" <<'PY' | tee -a "$RESULTS.replay"
import json, sys
rep = json.load(open(sys.argv[1])); s = rep["stages"][0]
el, us, sy, rss = open(sys.argv[2]).read().split()[-4:]
start_ms = (s["started_at_us"] - int(sys.argv[5]) / 1000) / 1000
print(json.dumps({"scenario": sys.argv[3], "round": int(sys.argv[4]), "requests": s["requests"],
  "errors": s["errors"], "rps": s["throughput_rps"], "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
  "lag_p50_ms": s["send_lag_ms"]["p50"], "lag_p99_ms": s["send_lag_ms"]["p99"], "lag_max_ms": s["send_lag_ms"]["max"],
  "cpu_us_per_req": (float(us) + float(sy)) / max(s["requests"], 1) * 1e6, "rss_mib": int(rss) / 1024,
  "start_ms": round(start_ms, 1), "duration_s": s["duration_s"]}))
PY
}

: > "$RESULTS.replay"
for r in $(seq 1 "$ROUNDS"); do
  PROXY_PID="" run_load "wrk_get" "$r" wrk "$URL" -t1 -c32 -d "$DUR"
  if [ -n "$OHA" ]; then PROXY_PID="" run_load "oha_get" "$r" oha "$URL" -c 32 -z "$DUR"; fi
  "$FLOOR" "$URL" "$DUR_S" 32 | while read -r line; do
    "$PYTHON" -c 'import json,sys; r=json.loads(sys.argv[1]); r["round"]=int(sys.argv[2]); r["tool"]="client_floor"; print(json.dumps(r))' "$line" "$r"
  done >> "$RESULTS"
  replay_run "tapedeck" "$r" "$WORK/throughput.db" --multiplier 10 --speed 10000 --loop --max-inflight 32 --duration "$DUR"
  replay_run "tapedeck_nocorr" "$r" "$WORK/throughput.db" --multiplier 10 --speed 10000 --loop --max-inflight 32 --duration "$DUR" --no-correlation
done
for r in $(seq 1 "$ROUNDS"); do
  replay_run "timing_2000rps" "$r" "$WORK/timing.db"
  replay_run "million_10s" "$r" "$WORK/million.db" --duration 10s
done

echo
echo "## load generators (wrk/oha via run_load)"
"$PYTHON" "$BENCH_DIR/summarize.py" "$RESULTS"
echo
echo "## tapedeck replay runs (median [min-max])"
"$PYTHON" - "$RESULTS.replay" "$RESULTS" <<'PY'
import json, statistics, sys
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows: by[r["scenario"]].append(r)
keys = ["requests", "errors", "rps", "p50_ms", "p99_ms", "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "cpu_us_per_req", "rss_mib", "start_ms"]
print("| scenario | n | " + " | ".join(keys) + " |"); print("|---|---|" + "---|" * len(keys))
def cell(xs):
    m = statistics.median(xs)
    return f"{m:.2f} [{min(xs):.2f}-{max(xs):.2f}]" if len(xs) > 1 else f"{m:.2f}"
for k, rs in by.items():
    print(f"| {k} | {len(rs)} | " + " | ".join(cell([r[c] for r in rs]) for c in keys) + " |")
loads = defaultdict(dict)
for l in open(sys.argv[2]):
    if l.strip():
        r = json.loads(l); loads[r["scenario"]][r["round"]] = r["rps"]
print()
print("| ratio per round (median [min-max]) | req/s |")
print("|---|---|")
for base in ("wrk_get", "oha_get"):
    for name in ("tapedeck", "tapedeck_nocorr", "hyper-util_pooled_client", "bare_hyper_http1"):
        runs = by.get(name) or [{"round": k, "rps": v} for k, v in loads.get(name, {}).items()]
        xs = [r["rps"] / loads[base][r["round"]] for r in runs
              if loads.get(base, {}).get(r["round"])]
        if xs: print(f"| {name}/{base} | {cell(xs)} |")
PY
