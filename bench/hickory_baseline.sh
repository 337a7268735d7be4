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
#        PORT (5396, ours), HICKORY_PORT (5397), HICKORY_WORKERS (1: a current-thread runtime),
#        ALLOCS (1: also count the example's heap allocations per query under valgrind, if installed)
# Bounded: about REPS x 2 x (DURATION + 3) s, 30-60 s for ALLOCS, plus the builds.
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

# Exits when something already serves UDP port $1: it would answer in place
# of the server this script starts (and be measured as it).
port_free() {
  [ -z "$(ss -Hlun "sport = :$1" 2>/dev/null)" ] || { echo "UDP port $1 is in use by another process" >&2; exit 2; }
}

# Our server (bench/lib.sh), on core 0, once its port is known to be free.
ours_start() {
  port_free "$PORT"
  bench_start 1 0
}

# Starts the hickory-server example on core 0 and waits (10 s at most) for the last pod.
hickory_start() {
  port_free "$HICKORY_PORT"
  RUST_LOG=warn taskset -c 0 "$HICKORY_BIN" --manifests "$WORK/manifests.yaml" \
    --listen "127.0.0.1:$HICKORY_PORT" --workers "$HICKORY_WORKERS" >"$WORK/hickory.log" 2>&1 &
  SERVER_PID=$!
  local last="web-$((PODS - 1)).svc-$((SERVICES - 1)).default.svc.cluster.local"
  for _ in $(seq 100); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    [ "$(dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$HICKORY_PORT" "$last" A 2>/dev/null)" = "10.20.$((SERVICES - 1)).$PODS" ] && return 0
    sleep 0.1
  done
  echo "hickory_baseline did not come up" >&2
  cat "$WORK/hickory.log" >&2
  return 1
}

# The rcodes and records (answer and additional sections, owner names left
# out) of a sample of the load and one query of each other kind, one per line.
answers() {
  local q
  for q in "web-0.svc-0.default.svc.cluster.local A" "web-$((PODS - 1)).svc-7.default.svc.cluster.local A" \
    "svc-3.default.svc.cluster.local A" "_web._tcp.svc-3.default.svc.cluster.local SRV" \
    "nope.svc-3.default.svc.cluster.local A"; do
    # shellcheck disable=SC2086
    dig +tries=1 +timeout=1 +noall +comments +answer +additional @127.0.0.1 -p "$1" $q 2>/dev/null |
      grep -Eo 'status: [A-Z]+|IN[[:space:]]+[A-Z]+[[:space:]]+.*' | tr -s '\t ' ' ' | sort
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

# Heap allocations of the hickory-server example: valgrind's count over a
# start, $1 pod A queries at 500 qps, and a stop. Prints "allocs bytes".
# (valgrind sees the system allocator, which the example uses; our binary's
# jemalloc it does not see, and our query path allocates nothing by design.)
alloc_count() {
  port_free "$HICKORY_PORT"
  valgrind --tool=memcheck --leak-check=no "$HICKORY_BIN" --manifests "$WORK/manifests.yaml" \
    --listen "127.0.0.1:$HICKORY_PORT" >"$WORK/valgrind.log" 2>&1 &
  SERVER_PID=$!
  local last="web-$((PODS - 1)).svc-$((SERVICES - 1)).default.svc.cluster.local"
  local up=
  for _ in $(seq 120); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$HICKORY_PORT" "$last" A 2>/dev/null | grep -q . && { up=1; break; }
    sleep 0.5
  done
  [ -n "$up" ] || { bench_stop; return 1; }
  if [ "$1" -gt 0 ]; then
    head -n "$1" "$WORK/pod_a.txt" >"$WORK/alloc_q.txt"
    timeout 120 dnsperf -s 127.0.0.1 -p "$HICKORY_PORT" -d "$WORK/alloc_q.txt" -n 1 -c 1 -q 10 -Q 500 \
      >"$WORK/alloc_perf.txt" 2>&1 || true
  fi
  bench_stop
  awk '/total heap usage/ { a = $5; b = $9; gsub(/,/, "", a); gsub(/,/, "", b); print a, b }' "$WORK/valgrind.log"
}

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

echo "== $((SERVICES * PODS)) pods; pod A queries at $RATE qps for $DURATION s, $REPS runs per server;" \
  "servers on core 0, dnsperf on core 1; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
ours_start
answers "$PORT" >"$WORK/ours.answers"
bench_stop
hickory_start
answers "$HICKORY_PORT" >"$WORK/hickory.answers"
bench_stop
if diff "$WORK/ours.answers" "$WORK/hickory.answers" >"$WORK/answers.diff"; then
  echo "answers: identical ($(grep -c . "$WORK/ours.answers") rcodes and records of 5 sample queries)"
else
  echo "answers differ (< headless-dns, > hickory_baseline):"; cat "$WORK/answers.diff"
fi

echo "server rep us/query avg_ms lost reply_B qps busy%_before"
: >"$WORK/raw.txt"
for rep in $(seq "$REPS"); do
  ours_start
  run headless-dns "$PORT" "$rep"
  bench_stop
  hickory_start
  run hickory-server "$HICKORY_PORT" "$rep"
  bench_stop
done

echo
printf "%-15s %10s %8s %6s %8s %9s\n" server "µs/query" avg_ms lost reply_B qps
declare -A US MS
for name in headless-dns hickory-server; do
  cols=()
  for f in 3 4 5 6 7; do cols+=("$(awk -v n="$name" -v f="$f" '$1 == n { print $f }' "$WORK/raw.txt" | median)"); done
  US[$name]=${cols[0]}
  MS[$name]=${cols[1]}
  printf "%-15s %10.2f %8.3f %6.0f %8.0f %9.0f\n" "$name" "${cols[@]}"
done
awk -v o="${US[headless-dns]}" -v h="${US[hickory-server]}" -v ol="${MS[headless-dns]}" -v hl="${MS[hickory-server]}" \
  'BEGIN { if (o > 0 && ol > 0) printf "hickory-server / headless-dns: %.2fx the CPU per query, %.2fx the latency\n", h / o, hl / ol }'
if [ "${ALLOCS:-1}" = 1 ] && command -v valgrind >/dev/null; then
  if read -r a0 b0 < <(alloc_count 0) && read -r a1 b1 < <(alloc_count 5000); then
    answered=$(bench_field "Queries completed" "$WORK/alloc_perf.txt")
    awk -v a="$((a1 - a0))" -v b="$((b1 - b0))" -v n="${answered:-0}" 'BEGIN { if (n > 0)
      printf "hickory-server heap allocations per UDP query: %.1f (%.0f bytes; valgrind, %d queries)\n", a / n, b / n, n }'
  else
    echo "heap allocations not counted: no valgrind summary; its log ends:"; tail -5 "$WORK/valgrind.log"
  fi
elif [ "${ALLOCS:-1}" = 1 ]; then
  echo "(valgrind not installed: heap allocations per query not counted; apt-get install valgrind)"
fi
awk '$8 > 10 { printf "WARNING: %s run %s started with the machine %s%% busy (other processes)\n", $1, $2, $8 }' "$WORK/raw.txt"
echo "(median of $REPS runs; µs/query = server CPU time / answered queries; load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
