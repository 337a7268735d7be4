#!/usr/bin/env bash
# Overload run (issue 7): the release server on loopback, offered about twice
# the load it can answer for 60 s, to show that it sheds load (drops queries)
# without growing memory or answering wrongly. Not a test, no pass/fail on
# timing: it prints capacity, answered/lost counts, RSS before and after
# (VmRSS from /proc/PID/status) and checks a sample of answers.
#
# Why the CPU quota: the server answers ~110k qps on one core, and dnsperf
# cannot send much more than that from the other core, so to offer *twice*
# the capacity the server gets a fraction of a core (a cgroup cpu quota,
# CPU_QUOTA percent, default 15; needs root and a writable cpu cgroup; with
# CPU_QUOTA=0 or none available it only pins the server to core 0 and says so).
#
# Usage: bench/overload.sh            (needs dnsperf and dig: apt-get install dnsperf dnsutils)
# Env:   PORT (5399), DURATION (60 s), CPU_QUOTA (15), SERVICES (100) x PODS (10)
# Bounded: every step has a time limit; the whole run takes about DURATION + 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-5399}
DURATION=${DURATION:-60}
CPU_QUOTA=${CPU_QUOTA:-15}
SERVICES=${SERVICES:-100}
PODS=${PODS:-10}
. bench/lib.sh
bench_prepare overload.sh
bench_start 1 0

throttle="none (pinned to core 0)"
if [ "$CPU_QUOTA" -gt 0 ]; then
  if bench_limit_cpu "$CPU_QUOTA"; then
    throttle="$THROTTLE (core 0)"
  else
    echo "warning: no writable cpu cgroup; the server is only pinned, dnsperf may not reach 2x" >&2
  fi
fi

rss() { awk '/^VmRSS/ {print $2 " " $3}' "/proc/$SERVER_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
field() { bench_field "$@"; }

# Sample answers: every 97th query of the file, checked against the manifests.
check_sample() {
  local ok=0 bad=0 lost=0 name type want got
  while read -r name type; do
    case "$name" in
      nope-*) want=NXDOMAIN ;;
      _web.*) want=SRV ;;
      web-*)
        local k=${name#web-}; k=${k%%.*}; local j=${name#*.svc-}; j=${j%%.*}
        want="10.20.$j.$((k + 1))" ;;
      *) local j=${name#svc-}; j=${j%%.*}; want="$PODS x 10.20.$j.*" ;;
    esac
    got=$(dig +tries=1 +timeout=1 @127.0.0.1 -p "$PORT" "$name" "$type" 2>/dev/null | tr -s '[:blank:]' ' ') \
      || { lost=$((lost + 1)); continue; }
    case "$want" in
      NXDOMAIN) grep -q 'status: NXDOMAIN' <<<"$got" ;;
      SRV) [ "$(grep -c "IN SRV 0 [0-9]* 80 web-" <<<"$got")" = "$PODS" ] ;;
      *x*) [ "$(grep -cE "IN A 10\.20\.$j\.[0-9]+$" <<<"$got")" = "$PODS" ] ;;
      *) grep -qE "IN A ${want//./\\.}$" <<<"$got" ;;
    esac && ok=$((ok + 1)) || { bad=$((bad + 1)); echo "  wrong answer for $name $type (want $want)" >&2; }
  done < <(awk 'NR % 97 == 1' "$WORK/queries.txt")
  echo "$ok correct, $bad wrong, $lost unanswered"
}

echo "== server: $BIN, 1 UDP thread, $((SERVICES * PODS)) pods; throttle: $throttle"
echo "RSS at start:            $(rss)"
echo "== capacity: dnsperf saturating for 10 s"
timeout 30 taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l 10 -c 8 -q 1000 -t 1 >"$WORK/cap.txt" 2>&1 || true
CAP=$(field "Queries per second" "$WORK/cap.txt")
CAP=${CAP%.*}
[ -n "$CAP" ] && [ "$CAP" -gt 0 ] || { echo "no capacity figure" >&2; cat "$WORK/cap.txt" >&2; exit 1; }
echo "capacity: $CAP qps answered (lost: $(field "Queries lost" "$WORK/cap.txt"))"
RSS_BEFORE=$(rss)
echo "RSS before overload:     $RSS_BEFORE"

RATE=$((2 * CAP))
echo "== overload: $RATE qps offered (2x) for $DURATION s"
udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]+$/ {print $6}' /proc/net/snmp; }
drops0=$(udp_drops)
ticks0=$(cpu_ticks)
timeout $((DURATION + 30)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
  -l "$DURATION" -Q "$RATE" -c 8 -q 20000 -t 1 >"$WORK/over.txt" 2>&1 &
PERF=$!
sleep $((DURATION / 2))
echo "sample during overload:  $(check_sample)"
wait "$PERF" || true
ticks1=$(cpu_ticks)
drops1=$(udp_drops)
sent=$(field "Queries sent" "$WORK/over.txt")
done_=$(field "Queries completed" "$WORK/over.txt")
lost=$(field "Queries lost" "$WORK/over.txt")
echo "sent $sent, answered $done_, lost $lost ($(awk -v l="$lost" -v s="$sent" 'BEGIN { printf "%.1f", 100 * l / s }')%)"
echo "offered $(awk -v s="$sent" -v d="$DURATION" 'BEGIN { printf "%d", s / d }') qps, answered $(field "Queries per second" "$WORK/over.txt") qps, avg latency $(field "Average Latency" "$WORK/over.txt") s"
echo "shed by the kernel (UDP RcvbufErrors, whole host): $((drops1 - drops0))"
echo "server CPU during overload: $(awk -v t=$((ticks1 - ticks0)) -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f%%", 100 * t / hz / d }') of one core"
echo "RSS after overload:      $(rss)"
echo "== sample after overload: $(check_sample)"
kill -0 "$SERVER_PID" && echo "server still running"
grep -E "Response codes" "$WORK/over.txt" || true
