#!/usr/bin/env bash
# Issue #19's speed targets in one run, beside Knot in the same minutes:
#   1. capacity at QUOTA percent of one core (cgroup), mixed load and each
#      single-type load (pod A, service A, SRV + glue, NXDOMAIN): qps, ratio;
#   2. a fixed offered rate (FIXED qps): server CPU µs per query, latency, lost;
#   3. bench/scaling.sh: 2 UDP threads under twice the budget of one.
# All of it through ../shared/bench/peers.sh (the same data, answer checks and
# dnsperf runs for both servers). Memory, freshness and sync have their own
# benches (cargo bench --bench server_memory / freshness).
#
# Usage: bench/targets.sh [BIN]   (root: cgroups; default target/release/headless-dns)
# Env: QUOTA (50), FIXED (40000), REPS (3), DURATION (8), PEERS (../shared/bench/peers.sh),
#      PARTS ("capacity fixed scaling"), LOADS ("mixed web svc _web nx")
# Bounded: every dnsperf run is bounded by DURATION; about 12 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/headless-dns}
QUOTA=${QUOTA:-50}
FIXED=${FIXED:-40000}
REPS=${REPS:-3}
DURATION=${DURATION:-8}
PEERS=${PEERS:-../shared/bench/peers.sh}
PARTS=${PARTS:-"capacity fixed scaling"}
LOADS=${LOADS:-"mixed web svc _web nx"}
DIR=${BENCH_DIR:-/tmp/bench}
[ -x "$BIN" ] || { echo "targets.sh: no $BIN (cargo build --release)" >&2; exit 2; }
[ -x "$PEERS" ] || { echo "targets.sh: no $PEERS" >&2; exit 2; }
BIN=$(realpath "$BIN")
export PROJECT_CMD="$BIN serve --manifests {manifests} --listen 127.0.0.1:{port} --threads {threads} --admin none"
export PROJECT_PORT=5310 SERVERS=knot REPS DURATION BENCH_DIR=$DIR
on() { [[ " $PARTS " == *" $1 "* ]]; }

echo "== targets.sh $(git rev-parse --short HEAD 2>/dev/null) $BIN; $(date -u +%FT%TZ); $(uptime)"
# The table rows of a peers.sh run: "server qps ... " lines after its header.
rows() { awk '/^server/ {t = 1; print; next} t && /^(knot|project) / {print}' "$1"; }
# Column $2 of server $3's row in peers.sh output $1.
col() {
  awk -v c="$2" -v s="$3" '/^server/ {for (i = 1; i <= NF; i++) h[$i] = i; next}
    h[c] && $1 == s {print $h[c]; exit}' "$1"
}

if on capacity; then
  # The single-type files split peers.sh's mixed query file by first label.
  [ -s "$DIR/queries.txt" ] || NO_INSTALL=1 MODES=pinned DURATION=1 REPS=1 SERVERS= PROJECT_CMD= "$PEERS" >/dev/null 2>&1 || true
  for t in web svc _web nx; do grep "^$t" "$DIR/queries.txt" >"$DIR/q_$t.txt"; done
  for load in $LOADS; do
    q=$DIR/queries.txt; [ "$load" = mixed ] || q=$DIR/q_$load.txt
    out=$(mktemp)
    QUOTA=$QUOTA MODES=pinned QUERIES=$q "$PEERS" >"$out" 2>&1 || { cat "$out"; exit 1; }
    ours=$(col "$out" qps project); knot=$(col "$out" qps knot)
    echo "-- capacity at $QUOTA% of a core, load $load: project $ours qps, knot $knot qps," \
      "ratio $(awk -v a="$ours" -v b="$knot" 'BEGIN {printf "%.2f", a / b}')"
    rows "$out" | sed 's/^/   /'
    grep -i warning "$out" | sed 's/^/   /' || true
    rm -f "$out"
  done
fi

if on fixed; then
  out=$(mktemp)
  FIXED=$FIXED "$PEERS" >"$out" 2>&1 || { cat "$out"; exit 1; }
  ours=$(col "$out" srv_ms/kq project); knot=$(col "$out" srv_ms/kq knot)
  echo "-- fixed $FIXED qps, mixed: server CPU per query project $ours µs, knot $knot µs," \
    "ratio $(awk -v a="$ours" -v b="$knot" 'BEGIN {printf "%.2f", a / b}');" \
    "avg ms project $(col "$out" avg_ms project), knot $(col "$out" avg_ms knot);" \
    "lost project $(col "$out" lost project), knot $(col "$out" lost knot)"
  rows "$out" | sed 's/^/   /'
  grep -i warning "$out" | sed 's/^/   /' || true
  rm -f "$out"
fi

if on scaling; then
  echo "-- bench/scaling.sh"
  bash bench/scaling.sh | sed 's/^/   /'
fi
