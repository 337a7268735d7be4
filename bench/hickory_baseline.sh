#!/usr/bin/env bash
# hickory-server baseline (issue 14): the same cluster served by our listener
# and by hickory-server with a minimal custom RequestHandler over the same
# Index (examples/hickory_baseline.rs), at the same fixed rate of pod A
# queries, each server pinned to core 0 and dnsperf to core 1. It prints, per
# server, the median of REPS runs: server CPU µs per answered query (utime +
# stime from /proc/<pid>/stat over the run), average latency, lost queries and
# the average reply size. Why: docs/performance.md, "Why our own UDP/TCP
# listeners". The two servers alternate run by run, so a neighbour's build
# that slows one run slows both; compare the ratio, not the absolute numbers.
#
# Usage: bash bench/hickory_baseline.sh   (needs dnsperf, dig, taskset)
# Env:   RATE (40000 qps), DURATION (6 s), REPS (3), SERVICES (100, at most 256) x PODS (10),
#        PORT (5396, ours), HICKORY_PORT (5397), HICKORY_WORKERS (1: a current-thread runtime)
# Bounded: about REPS x 2 x (DURATION + 3) s plus the builds.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-40000}
DURATION=${DURATION:-6}
REPS=${REPS:-3}
PORT=${PORT:-5396}
HICKORY_PORT=${HICKORY_PORT:-5397}
HICKORY_WORKERS=${HICKORY_WORKERS:-1}
SERVICES=${SERVICES:-100}
PODS=${PODS:-10}
. bench/lib.sh
bench_prepare hickory_baseline.sh
timeout 1800 cargo build --release --locked -j2 -q --example hickory_baseline
HICKORY_BIN=$CARGO_TARGET_DIR/release/examples/hickory_baseline
grep '^web-' "$WORK/queries.txt" >"$WORK/pod_a.txt"
HZ=$(getconf CLK_TCK)

# Starts the hickory-server example on core 0 and waits (10 s at most) for the last pod.
hickory_start() {
  RUST_LOG=warn taskset -c 0 "$HICKORY_BIN" --manifests "$WORK/manifests.yaml" \
    --listen "127.0.0.1:$HICKORY_PORT" --workers "$HICKORY_WORKERS" >"$WORK/hickory.log" 2>&1 &
  SERVER_PID=$!
  local last="web-$((PODS - 1)).svc-$((SERVICES - 1)).default.svc.cluster.local"
  for _ in $(seq 100); do
    [ "$(dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$HICKORY_PORT" "$last" A 2>/dev/null)" = "10.20.$((SERVICES - 1)).$PODS" ] && return 0
    sleep 0.1
  done
  echo "hickory_baseline did not come up" >&2
  cat "$WORK/hickory.log" >&2
  return 1
}

# The answers to a sample of the load (and one of each other kind), without
# the varying parts (id, timing, TTLs stay: both serve TTL 5), one per line.
answers() {
  local q
  for q in "web-0.svc-0.default.svc.cluster.local A" "web-$((PODS - 1)).svc-7.default.svc.cluster.local A" \
    "svc-3.default.svc.cluster.local A" "_web._tcp.svc-3.default.svc.cluster.local SRV" \
    "nope.svc-3.default.svc.cluster.local A"; do
    # shellcheck disable=SC2086
    dig +tries=1 +timeout=1 +noall +comments +answer @127.0.0.1 -p "$1" $q 2>/dev/null |
      grep -Eo 'status: [A-Z]+|IN[[:space:]]+[A-Z]+[[:space:]]+.*' | tr -s '[:space:]' ' ' | sort
  done
}

cpu_ticks() { sed 's/^.*) //' "/proc/$SERVER_PID/stat" | awk '{print $12 + $13}'; }
busy() { # percent of the whole machine busy over 1 s (foreign load warning)
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  echo "$a $b" | awk '{n = NF / 2; t = 0; idle = 0; for (i = 2; i <= n; i++) { d = $(i + n) - $i; t += d; if (i == 5 || i == 6) idle += d }
    printf "%.0f", 100 * (t - idle) / (t ? t : 1) }'
}

# One run against the server in SERVER_PID on port $2; appends "name us avg_ms lost reply_B qps" to raw.
run() {
  local name=$1 port=$2 rep=$3 out=$WORK/$1-$3.txt t0 t1
  local idle; idle=$(busy)
  t0=$(cpu_ticks)
  timeout $((DURATION + 10)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/pod_a.txt" \
    -l "$DURATION" -Q "$RATE" -c 10 -q 200 -t 2 >"$out" 2>&1 || true
  t1=$(cpu_ticks)
  local done_ lost avg resp qps
  done_=$(bench_field "Queries completed" "$out")
  lost=$(bench_field "Queries lost" "$out")
  avg=$(bench_field "Average Latency" "$out")
  qps=$(bench_field "Queries per second" "$out")
  resp=$(awk '/Average packet size/ { for (i = 1; i <= NF; i++) if ($i == "response") { v = $(i + 1); gsub(/[^0-9]/, "", v); print v } }' "$out")
  [ -n "$done_" ] && [ "$done_" -gt 0 ] || { echo "no dnsperf result for $name" >&2; cat "$out" >&2; exit 1; }
  awk -v n="$name" -v r="$rep" -v t=$((t1 - t0)) -v hz="$HZ" -v d="$done_" -v a="$avg" -v l="$lost" -v b="$resp" -v q="$qps" -v i="$idle" \
    'BEGIN { printf "%s %d %.2f %.3f %d %d %.0f %s\n", n, r, t / hz * 1e6 / d, a * 1000, l, b, q, i }' | tee -a "$WORK/raw.txt"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

echo "== $((SERVICES * PODS)) pods; pod A queries at $RATE qps for $DURATION s, $REPS runs per server;" \
  "servers on core 0, dnsperf on core 1; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
bench_start 1 0
answers "$PORT" >"$WORK/ours.answers"
bench_stop
hickory_start
answers "$HICKORY_PORT" >"$WORK/hickory.answers"
bench_stop
if diff "$WORK/ours.answers" "$WORK/hickory.answers" >"$WORK/answers.diff"; then
  echo "answers: identical on $(grep -c . "$WORK/ours.answers") sampled records and rcodes"
else
  echo "answers differ (< headless-dns, > hickory_baseline):"; cat "$WORK/answers.diff"
fi

echo "server rep us/query avg_ms lost reply_B qps busy%_before"
: >"$WORK/raw.txt"
for rep in $(seq "$REPS"); do
  bench_start 1 0
  run headless-dns "$PORT" "$rep"
  bench_stop
  hickory_start
  run hickory-server "$HICKORY_PORT" "$rep"
  bench_stop
done

echo
printf "%-15s %10s %8s %6s %8s %9s\n" server "µs/query" avg_ms lost reply_B qps
for name in headless-dns hickory-server; do
  cols=()
  for f in 3 4 5 6 7; do cols+=("$(awk -v n="$name" -v f="$f" '$1 == n { print $f }' "$WORK/raw.txt" | median)"); done
  printf "%-15s %10.2f %8.3f %6.0f %8.0f %9.0f\n" "$name" "${cols[@]}"
done
awk '$1 == "headless-dns" { o += $3; ol += $4 } $1 == "hickory-server" { h += $3; hl += $4 }
  END { if (o > 0 && ol > 0) printf "hickory-server / headless-dns: %.2fx the CPU per query, %.2fx the latency\n", h / o, hl / ol }' "$WORK/raw.txt"
awk '$8 > 10 { printf "WARNING: %s run %s started with the machine %s%% busy (other processes)\n", $1, $2, $8 }' "$WORK/raw.txt"
echo "(median of $REPS runs; µs/query = server CPU time / answered queries; load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
