#!/usr/bin/env bash
# Scaling run (issue 6): does a second UDP worker thread answer twice as
# much, i.e. is there no shared lock or shared cache line on the query path?
#
# This machine has 2 cores and dnsperf needs most of one to offer ~120k qps,
# so "1 thread on one core vs 2 threads on two" cannot be measured directly.
# Instead the server gets a CPU budget by cgroup quota: QUOTA percent of a
# core with 1 thread, then 2 x QUOTA percent with 2 threads (SO_REUSEPORT
# sockets, both cores allowed), with dnsperf saturating it each time from
# many sockets. Work that serializes on a lock cannot turn the doubled budget
# into doubled answers; independent threads can. It prints qps, the ratio,
# and how the CPU time split over the UDP threads.
#
# Usage: bench/scaling.sh        (needs root for the cgroup, dnsperf, dig)
# Env:   PORT (5398), DURATION (10 s), QUOTA (30), SERVICES (250, at most 256) x PODS (10),
#        RCVBUF_KB (1024: each UDP socket's receive buffer, `[dns] udp_receive_buffer_kb`;
#        the quota stops the server for most of each 100 ms period, and the default
#        256 kB queue overflows meanwhile: ~2% lost, which moved the ratio by several %),
#        SERVER_CPUS (0,1: the cores the server may use), DNSPERF_CPUS (unpinned when
#        empty; SERVER_CPUS=0 DNSPERF_CPUS=1 keeps dnsperf off the server's core, both
#        threads then share core 0: what is left of the ratio is the server's own),
#        COUNT (empty; 1: count the server's recvmmsg, sendmmsg, epoll_wait calls and
#        context switches per answered query with `perf stat`, tracepoints, no ptrace),
#        CLIENTS (16: dnsperf's sockets, i.e. flows for SO_REUSEPORT to spread),
#        OUTSTANDING (2000: dnsperf's queries in flight, -q)
# Bounded: about 2 x (DURATION + 5) s plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-5398}
DURATION=${DURATION:-10}
QUOTA=${QUOTA:-30}
SERVICES=${SERVICES:-250}
PODS=${PODS:-10}
RCVBUF_KB=${RCVBUF_KB:-1024}
SERVER_CPUS=${SERVER_CPUS:-0,1}
DNSPERF_CPUS=${DNSPERF_CPUS:-}
COUNT=${COUNT:-}
CLIENTS=${CLIENTS:-16}
OUTSTANDING=${OUTSTANDING:-2000}
EVENTS=syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_epoll_wait,context-switches
. bench/lib.sh
bench_prepare scaling.sh
printf '[dns]\nudp_receive_buffer_kb = %s\n' "$RCVBUF_KB" >"$WORK/scaling.toml"
BENCH_SERVER_ARGS="--config $WORK/scaling.toml"

# CPU ticks (user + system) of each UDP thread of the server, one per line.
udp_ticks() {
  for t in /proc/"$SERVER_PID"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in dns-udp*) awk '{print $14 + $15}' "$t/stat" ;; esac
  done
}

declare -A QPS
pin=()
[ -n "$DNSPERF_CPUS" ] && pin=(taskset -c "$DNSPERF_CPUS")
echo "== $((SERVICES * PODS)) pods; $DURATION s per run; server on CPUs $SERVER_CPUS, dnsperf ${DNSPERF_CPUS:+on CPUs }${DNSPERF_CPUS:-unpinned}, $CLIENTS sockets; receive buffer $RCVBUF_KB kB per socket"
for threads in 1 2; do
  bench_start "$threads" "$SERVER_CPUS"
  budget=$((QUOTA * threads))
  bench_limit_cpu "$budget" || { echo "scaling.sh: needs a writable cpu cgroup (root)" >&2; exit 2; }
  before=$(udp_ticks | tr '\n' ' ')
  if [ -n "$COUNT" ]; then
    perf stat -x, -e "$EVENTS" -p "$SERVER_PID" -o "$WORK/count-$threads.txt" -- sleep "$DURATION" &
    COUNTER=$!
  fi
  timeout $((DURATION + 30)) "${pin[@]}" dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
    -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -t 1 >"$WORK/run-$threads.txt" 2>&1 || true
  after=$(udp_ticks | tr '\n' ' ')
  qps=$(bench_field "Queries per second" "$WORK/run-$threads.txt")
  QPS[$threads]=${qps%.*}
  split=$(awk -v a="$after" -v b="$before" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ");
    for (i = 1; i <= n; i++) printf "%s%.0f%%", (i > 1 ? " + " : ""), 100 * (x[i] - y[i]) / hz / d }')
  echo "$threads UDP thread(s), budget $budget% of a core ($THROTTLE): ${QPS[$threads]} qps," \
    "lost $(bench_field "Queries lost" "$WORK/run-$threads.txt"), avg latency $(bench_field "Average Latency" "$WORK/run-$threads.txt") s;" \
    "UDP thread CPU: $split"
  if [ -n "$COUNT" ]; then
    wait "$COUNTER"
    answered=$(bench_field "Queries completed" "$WORK/run-$threads.txt" | awk '{gsub(",", "", $1); print $1}')
    awk -F, -v n="$answered" '$1 ~ /^[0-9]+$/ {sub("syscalls:sys_enter_", "", $3);
      printf "%s%s %.3f", (k++ ? ", " : "   per answered query: "), $3, $1 / n} END {print ""}' \
      "$WORK/count-$threads.txt"
  fi
  bench_stop
done
awk -v a="${QPS[1]}" -v b="${QPS[2]}" 'BEGIN { printf "2 threads / 1 thread: %.2fx the answers for 2x the CPU budget\n", b / a }'
