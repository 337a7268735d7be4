#!/usr/bin/env bash
# Where a server's CPU goes at capacity (issue #19): Knot and headless-dns
# each held to QUOTA% of one core by a cgroup (as peers.sh QUOTA=50 does),
# saturated by dnsperf on the other core, sampled by `perf record -e
# cpu-clock -g` for SECS s. Prints per server: qps, and µs of server CPU per
# query split into user space, kernel, and the kernel's main paths
# (sendmmsg, of it the loopback softirq that delivers each reply into
# dnsperf's socket; recvmmsg; sleeping and waking). The kernel's part is the
# floor no user-space change can go under: capacity at the budget is at most
# budget / kernel µs per query.
#
# Data: peers.sh's cluster and mixed queries in BENCH_DIR (run peers.sh once
# first). Usage: bench/cpu_split.sh [BIN]   (root: cgroup, perf)
# Env: QUOTA (50), SECS (8), BENCH_DIR (/tmp/bench), PORT (5311), KNOT_PORT (5312)
# Bounded: two dnsperf runs of SECS + 4 s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/headless-dns}")
QUOTA=${QUOTA:-50}
SECS=${SECS:-8}
DIR=${BENCH_DIR:-/tmp/bench}
PORT=${PORT:-5311}
KNOT_PORT=${KNOT_PORT:-5312}
for tool in perf dnsperf dig knotd taskset; do
  command -v "$tool" >/dev/null || { echo "cpu_split.sh: needs $tool (apt-get install linux-perf dnsperf dnsutils knot)" >&2; exit 2; }
done
[ -s "$DIR/queries.txt" ] && [ -s "$DIR/cluster.yaml" ] && [ -s "$DIR/cluster.local.zone" ] ||
  { echo "cpu_split.sh: no peers.sh data in $DIR (run ../shared/bench/peers.sh once)" >&2; exit 2; }
# bench_limit_cpu and bench_stop (the server in SERVER_PID, its cgroup in CGROUP).
. bench/lib.sh
WORK=$(mktemp -d)
trap 'bench_stop; rm -rf "$WORK"' EXIT

# measure NAME PORT: load, sample, print the split.
measure() {
  local name=$1 port=$2
  for _ in $(seq 300); do
    dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 web-0.svc-0.ns-0.svc.cluster.local | grep -q . && break
    sleep 0.2
  done
  bench_limit_cpu "$QUOTA" || { echo "cpu_split.sh: needs a writable cpu cgroup (root)" >&2; exit 2; }
  timeout $((SECS + 30)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$DIR/queries.txt" \
    -l $((SECS + 4)) -c 10 -q 200 >"$WORK/$name.dnsperf" 2>&1 &
  local dp=$!
  sleep 2
  timeout $((SECS + 20)) perf record -q -e cpu-clock -F 4000 -g -p "$SERVER_PID" -o "$WORK/$name.data" -- sleep "$SECS" >/dev/null 2>&1
  wait "$dp" || true
  local qps; qps=$(bench_field "Queries per second" "$WORK/$name.dnsperf")
  # Share (percent) of the samples in user space, and under each kernel path (children).
  perf report -i "$WORK/$name.data" --no-children --sort dso -g none 2>/dev/null |
    awk '$1 ~ /%$/ {sub("%", "", $1); if ($2 == "[kernel.kallsyms]") k += $1; else u += $1}
         END {print "user", u; print "kernel", k}' >"$WORK/$name.split"
  perf report -i "$WORK/$name.data" --children --sort sym -g none 2>/dev/null |
    awk '$1 ~ /%$/ && $3 == "[k]" {sub("%", "", $1); print $4, $1}' >>"$WORK/$name.split"
  awk -v name="$name" -v qps="$qps" -v quota="$QUOTA" '
    { share[$1] = $2 }
    END {
      us = quota / 100 * 1e6 / qps   # server CPU µs per query at the budget
      printf "%-13s %9.0f qps at %d%% of a core = %.2f µs of CPU per query:\n", name, qps, quota, us
      printf "    user space %.2f µs (%.0f%%), kernel %.2f µs (%.0f%%)\n", us * share["user"] / 100, share["user"], us * share["kernel"] / 100, share["kernel"]
      printf "    sendmmsg %.2f µs (of it the loopback delivery to the client, softirq: %.2f), recvmmsg %.2f, epoll_wait %.2f, sleeping/waking (schedule) %.2f\n",
        us * share["__x64_sys_sendmmsg"] / 100, us * share["handle_softirqs"] / 100, us * share["__x64_sys_recvmmsg"] / 100,
        us * share["__x64_sys_epoll_wait"] / 100, us * share["schedule"] / 100
      printf "    ceiling with no user space at all: %.0f qps\n", quota / 100 * 1e6 / (us * share["kernel"] / 100)
    }' "$WORK/$name.split"
  bench_stop
}

echo "== cpu_split.sh $(git rev-parse --short HEAD 2>/dev/null) $BIN; $(date -u +%FT%TZ); $(uptime)"
mkdir -p "$WORK/knot"
cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: $WORK/knot
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: $WORK/knot/db
template:
  - id: default
    storage: $DIR
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
zone:
  - domain: cluster.local
    file: $DIR/cluster.local.zone
EOF
taskset -c 0 knotd -c "$WORK/knot/knot.conf" -s "$WORK/knot/knot.sock" >"$WORK/knot/log" 2>&1 &
SERVER_PID=$!
measure knot "$KNOT_PORT"
taskset -c 0 "$BIN" serve --manifests "$DIR/cluster.yaml" --listen "127.0.0.1:$PORT" --threads 1 \
  --admin none >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
measure headless-dns "$PORT"
