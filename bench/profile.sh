#!/usr/bin/env bash
# Profile of the UDP query path (issue 19): instructions per query under
# callgrind (deterministic: other load on the machine does not change it, so
# it is the measure for before/after comparisons of code), the functions they
# go to, and system calls per query under strace.
#
# Data: peers.sh's cluster (../shared/bench/gen_zone.py: 1,000 headless
# services x 10 pods, its mixed query file: 70% pod A, 20% service A, 5% SRV,
# 5% NXDOMAIN), served by the release binary from manifests, 1 UDP thread.
# Each phase sends a bounded dnsperf run (RATE qps for SECS s) to 127.0.0.1:
#   paced:     callgrind at RATE qps: queries trickle in one at a time;
#   saturated: callgrind at 4x RATE: the server (slowed ~50x by valgrind)
#              falls behind, so queries wait in the socket as at capacity;
#   strace:    strace -c -f at STRACE_RATE, then 4x STRACE_RATE.
# Counters are zeroed after the server is up, so loading is not counted.
#
#   cpu:       user and system CPU per query at the strace rates, without
#              strace (from /proc; the one phase that other load disturbs).
# Usage: bench/profile.sh [BIN]   (default target/release/headless-dns)
# Needs: valgrind, strace, dnsperf, dig, python3, bc. Env: PHASES
# ("callgrind strace cpu"), PORT (5396), RATE
# (1500), SECS (8), STRACE_RATE (10000), GEN (../shared/bench/gen_zone.py),
# OUT (a temp dir; callgrind files stay there for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/headless-dns}
PORT=${PORT:-5396}
RATE=${RATE:-1500}
SECS=${SECS:-8}
STRACE_RATE=${STRACE_RATE:-10000}
PHASES=${PHASES:-"callgrind strace cpu"}
GEN=${GEN:-../shared/bench/gen_zone.py}
OUT=${OUT:-$(mktemp -d)}
for tool in valgrind callgrind_control strace dnsperf dig python3 bc; do
  command -v "$tool" >/dev/null || { echo "profile.sh: needs $tool (apt-get install valgrind strace dnsperf dnsutils)" >&2; exit 2; }
done
[ -x "$BIN" ] || { echo "profile.sh: no $BIN (cargo build --release)" >&2; exit 2; }
[ -s "$OUT/queries.txt" ] || python3 "$GEN" --outdir "$OUT" --services 1000 --pods 10 \
  --namespaces 10 --manifests "$OUT/cluster.yaml" >/dev/null

PID=
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  PID=
}
trap stop EXIT

# Starts "$@" serving the cluster; waits (bounded) for a right answer.
start() {
  "$@" "$BIN" serve --manifests "$OUT/cluster.yaml" --listen "127.0.0.1:$PORT" \
    --threads 1 --admin none >"$OUT/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 600); do
    dig +short +time=1 +tries=1 -p "$PORT" @127.0.0.1 web-0.svc-0.ns-0.svc.cluster.local A \
      2>/dev/null | grep -q . && return 0
    sleep 0.2
  done
  echo "profile.sh: the server did not answer" >&2; exit 1
}

# dnsperf at $1 qps for SECS s; prints the queries completed.
load() {
  timeout $((SECS + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$OUT/queries.txt" -l "$SECS" \
    -Q "$1" -c 4 -q 200 >"$OUT/dnsperf.txt" 2>&1 || true
  awk '/Queries completed:/ {print $3}' "$OUT/dnsperf.txt"
}

echo "== $BIN ($(git rev-parse --short HEAD 2>/dev/null)); $(uptime)"
on() { [[ " $PHASES " == *" $1 "* ]]; }
for phase in paced saturated; do
  on callgrind || break
  rate=$RATE; [ $phase = saturated ] && rate=$((RATE * 4))
  rm -f "$OUT"/cg.$phase.*
  start valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$phase.%p" \
    --dump-instr=no --compress-strings=no --compress-pos=no
  callgrind_control -z "$PID" >/dev/null 2>&1
  done_q=$(load "$rate")
  callgrind_control -d "$PID" >/dev/null 2>&1
  stop
  # The dump of the query window (the file without a suffix is written at exit).
  file=$(ls "$OUT"/cg.$phase.*.1)
  ir=$(awk '/^summary:/ {print $2}' "$file")
  printf '%-9s callgrind: %s queries answered at %s qps offered, %s instructions, %.0f per query\n' \
    "$phase" "$done_q" "$rate" "$ir" "$(echo "$ir / $done_q" | bc -l)"
  python3 bench/callgrind_self.py "$file" 25 "$done_q" >"$OUT/top.$phase.txt"
  echo "  instructions per query by function (self cost): $OUT/top.$phase.txt"
  sed -n '2,13p' "$OUT/top.$phase.txt" | sed 's/^/    /'
done

for rate in "$STRACE_RATE" $((STRACE_RATE * 4)); do
  on strace || break
  start
  strace -c -f -p "$PID" -o "$OUT/strace.$rate.txt" &
  SPID=$!
  sleep 1
  done_q=$(load "$rate")
  kill -INT "$SPID"; wait "$SPID" 2>/dev/null || true
  stop
  calls=$(awk '$NF == "total" {print $4}' "$OUT/strace.$rate.txt")
  printf 'strace at %s qps offered: %s queries answered, %s system calls, %.2f per query\n' \
    "$rate" "$done_q" "$calls" "$(echo "$calls / $done_q" | bc -l)"
  awk 'NR > 2 && NR < 9 && $NF != "total" && $1 !~ /^-/ {print "    " $NF ": " $4}' "$OUT/strace.$rate.txt"
done

# User and system CPU per query at a fixed rate (from /proc/<pid>/stat; noisy
# on a shared machine, unlike the counts above).
ticks() { awk '{print $14, $15}' "/proc/$PID/stat"; }
hz=$(getconf CLK_TCK)
for rate in "$STRACE_RATE" $((STRACE_RATE * 4)); do
  on cpu || break
  start
  read -r u0 s0 < <(ticks)
  done_q=$(load "$rate")
  read -r u1 s1 < <(ticks)
  stop
  printf 'cpu at %s qps offered: %s answered; user %.2f us, system %.2f us per query\n' "$rate" "$done_q" \
    "$(echo "($u1 - $u0) * 1000000 / $hz / $done_q" | bc -l)" "$(echo "($s1 - $s0) * 1000000 / $hz / $done_q" | bc -l)"
done
