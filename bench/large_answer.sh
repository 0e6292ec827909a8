#!/usr/bin/env bash
# bench/large_answer.sh — does recording hold up a large answer's last byte?
#
# An nginx upstream serves a 10 MiB chat-history JSON answer, gzip-encoded
# (gzip_static: the same ~1.8 MiB of gzip every time, no compression cost
# in the measurement). Per round, two tapedecks run side by side in front
# of it:
#   fwd        `tapedeck record --exclude '/*'`: the proxy, nothing recorded
#   record     `tapedeck record $RECORD_FLAGS` (default `--max-body 16MiB`:
#              every answer recorded whole, so each one is decoded, scanned
#              for secrets and re-encoded; its `token` fields are redacted)
# and N times in turn, one GET each to the upstream itself (direct, for
# scale), fwd and record (curl, Accept-Encoding: gzip, one connection
# each, PACE seconds apart) measure the time to the last byte (curl's
# time_total). Interleaving the three paths request by request keeps a
# change in the machine's load from landing on one path only. The figure
# is the median time to last byte over all requests of all rounds, and
# record/fwd. Each tapedeck run gets a fresh capture and is stopped with
# SIGTERM; the record capture must then hold exactly the N answers with 0
# dropped, none with the clear token, and every stored whole answer with
# its marker.
#
# Recording's work on such an answer off the client's path (decoding
# 10 MiB, scanning it, re-encoding it, writing 2.5 MiB) takes a few
# hundred ms of CPU. PACE (0.3 s) leaves room for it before the next
# request, so the figure is what recording adds to the answer's path.
# PACE=0 sends back to back: on 2 cores shared with curl and nginx the
# background work then competes for CPU, and past the queue budget records
# are dropped (counted; the check then says MISMATCH).
#
# Env: N (40) ROUNDS (3) PACE (0.3) RECORD_FLAGS (--max-body 16MiB)
#      PORT_UP (18080) PORT_TD (18084; record listens on PORT_TD+1)
# Needs: nginx, curl, sqlite3, python3; builds tapedeck in release mode.
source "$(dirname "$0")/lib.sh"
PORT_TD=${PORT_TD:-18084}
N=${N:-40}
PACE=${PACE:-0.3}
read -r -a RECORD_FLAGS <<< "${RECORD_FLAGS:---max-body 16MiB}"
bench_init

ROOT="$(cd "$BENCH_DIR/.." && pwd)"
(cd "$ROOT" && cargo build --release --quiet)
TAPEDECK="${TAPEDECK:-$ROOT/target/release/tapedeck}"

# A 10 MiB history: messages with varied text, ids and one token field
# per page, so it compresses like real chat JSON (about 4:1), not 100:1.
DOCS="$WORK/docs"; mkdir -p "$DOCS"
TOKEN="tok_bench_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
"$PYTHON" - "$DOCS/history.json" "$TOKEN" <<'EOF'
import json, random, sys
random.seed(7)
words = ("the proxy replay capture session token latency message channel user "
         "bot answer stream socket backend staging load report cursor page").split()
out, size, i = [], 0, 0
while size < 10 * 1024 * 1024:
    m = {"id": f"msg_{i:08d}_{random.getrandbits(40):010x}", "channel": f"ch_{random.randrange(500)}",
         "author": f"user_{random.randrange(5000)}", "ts": 1700000000 + i * 7,
         "text": " ".join(random.choice(words) for _ in range(random.randrange(8, 40))),
         "reactions": [random.choice(words) for _ in range(random.randrange(0, 4))]}
    out.append(m)
    size += len(json.dumps(m)) + 1
    i += 1
doc = {"token": sys.argv[2], "messages": out, "next_cursor": "c_0000000000"}
open(sys.argv[1], "w").write(json.dumps(doc, separators=(",", ":")))
EOF
gzip -kf -6 "$DOCS/history.json"
echo "# answer: $(stat -c %s "$DOCS/history.json") bytes of JSON, $(stat -c %s "$DOCS/history.json.gz") bytes gzip"

require_free_port "$PORT_UP"
run_nginx ngx-up 1 "$PORT_UP" <<EOF
  types { application/json json; }
  server {
    listen 127.0.0.1:$PORT_UP;
    root $DOCS;
    location / { gzip_static always; }
  }
EOF
UP_PID=$NGINX_PID

# ttlb NAME PORT: one GET, its time_total appended to NAME.txt, then PACE
ttlb() {
  curl -s -o /dev/null --fail -H 'Accept-Encoding: gzip' -w '%{time_total}\n' \
    "http://127.0.0.1:$2/history.json" >> "$WORK/$1.txt"
  sleep "$PACE"
}

CHECKS="$WORK/checks.txt"; : > "$CHECKS"
for _ in $(seq 1 "$N"); do ttlb warmup "$PORT_UP"; done; rm -f "$WORK/warmup.txt"
PORT_FWD=$PORT_TD; PORT_REC=$((PORT_TD + 1))
for r in $(seq 1 "$ROUNDS"); do
  PORT_TD=$PORT_FWD start_tapedeck "fwd.r$r" --exclude '/*'; FWD_PID=$TD_PID
  PORT_TD=$PORT_REC start_tapedeck "record.r$r" "${RECORD_FLAGS[@]}"
  for _ in $(seq 1 "$N"); do
    ttlb direct "$PORT_UP"; ttlb fwd "$PORT_FWD"; ttlb record "$PORT_REC"
  done
  stop_pid "$FWD_PID" TERM
  # SIGTERM; recording's flush may take a while after back-to-back runs
  kill -TERM "$TD_PID"
  for _ in $(seq 1 600); do kill -0 "$TD_PID" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$TD_PID" KILL
  stored=$(sqlite3 "$TD_CAPTURE" 'SELECT count(*) FROM exchanges')
  dropped=$(sqlite3 "$TD_CAPTURE" 'SELECT coalesce(sum(dropped), 0) FROM captures')
  # stored answers (decoded) still holding the clear token
  clear=$("$PYTHON" - "$TD_CAPTURE" "$TOKEN" <<'EOF'
import gzip, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
bodies = [gzip.decompress(b) for (b,) in db.execute("SELECT response_body FROM exchanges")]
print(sum(sys.argv[2].encode() in b or (len(b) > 0 and b"redacted:" not in b) for b in bodies))
EOF
)
  verdict=$([ "$stored" = "$N" ] && [ "$dropped" = 0 ] && [ "$clear" = 0 ] && echo ok || echo MISMATCH)
  echo "| record.r$r | $N | $stored | $dropped | $clear | $verdict |" >> "$CHECKS"
done

echo
echo "## captures (stored must equal sent, 0 dropped, 0 answers with the clear token or stored whole without its marker)"
echo "| run | sent | stored | dropped | answers with the clear token or no marker | check |"
echo "|---|---|---|---|---|---|"
cat "$CHECKS"
echo
"$PYTHON" - "$WORK" <<'EOF'
import statistics, sys
w = sys.argv[1]
med = {}
print("| path | requests | TTLB median ms | p90 ms | max ms |")
print("|---|---|---|---|---|")
for name in ("direct", "fwd", "record"):
    xs = sorted(float(x) * 1000 for x in open(f"{w}/{name}.txt"))
    med[name] = statistics.median(xs)
    print(f"| {name} | {len(xs)} | {med[name]:.2f} | {xs[int(len(xs) * 0.9) - 1]:.2f} | {xs[-1]:.2f} |")
print()
print(f"record/fwd TTLB (median): {med['record'] / med['fwd']:.2f}x; fwd/direct: {med['fwd'] / med['direct']:.2f}x")
EOF
! grep -q MISMATCH "$CHECKS"
