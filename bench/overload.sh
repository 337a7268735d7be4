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
for tool in dnsperf dig taskset; do
  command -v "$tool" >/dev/null || { echo "overload.sh: needs $tool (apt-get install dnsperf dnsutils util-linux)" >&2; exit 2; }
done

WORK=$(mktemp -d)
SERVER_PID=
CGROUP=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [ -n "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
timeout 1800 cargo build --release --locked -j2 -q
BIN=$CARGO_TARGET_DIR/release/headless-dns

# SERVICES headless services of PODS StatefulSet-style endpoints each:
# web-K.svc-J.default.svc.cluster.local -> 10.20.J.(K+1)
{
  for ((j = 0; j < SERVICES; j++)); do
    cat <<EOF
---
apiVersion: v1
kind: Service
metadata: {name: svc-$j, namespace: default}
spec: {clusterIP: None, ports: [{name: web, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-$j-1, namespace: default, labels: {kubernetes.io/service-name: svc-$j}}
addressType: IPv4
ports: [{name: web, protocol: TCP, port: 80}]
endpoints:
EOF
    for ((k = 0; k < PODS; k++)); do
      echo "  - {addresses: [\"10.20.$j.$((k + 1))\"], hostname: web-$k}"
    done
  done
} >"$WORK/manifests.yaml"

# Query mix: 70% pod A, 20% service A (PODS records), 5% SRV with glue, 5% NXDOMAIN.
awk -v s="$SERVICES" -v p="$PODS" 'BEGIN {
  srand(7);
  for (i = 0; i < 20000; i++) {
    j = int(rand() * s); k = int(rand() * p); r = rand();
    if (r < 0.70)      print "web-" k ".svc-" j ".default.svc.cluster.local A";
    else if (r < 0.90) print "svc-" j ".default.svc.cluster.local A";
    else if (r < 0.95) print "_web._tcp.svc-" j ".default.svc.cluster.local SRV";
    else               print "nope-" i ".svc-" j ".default.svc.cluster.local A";
  }
}' >"$WORK/queries.txt"

RUST_LOG=warn taskset -c 0 "$BIN" serve --manifests "$WORK/manifests.yaml" \
  --listen "127.0.0.1:$PORT" --threads 1 --admin none >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Ready when the last pod answers (bounded: 10 s).
last="web-$((PODS - 1)).svc-$((SERVICES - 1)).default.svc.cluster.local"
for _ in $(seq 100); do
  [ "$(dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$PORT" "$last" A 2>/dev/null)" = "10.20.$((SERVICES - 1)).$PODS" ] && break
  sleep 0.1
done
[ "$(dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$PORT" "$last" A)" = "10.20.$((SERVICES - 1)).$PODS" ] \
  || { echo "server did not come up" >&2; cat "$WORK/server.log" >&2; exit 1; }

throttle="none (pinned to core 0)"
if [ "$CPU_QUOTA" -gt 0 ]; then
  if [ -w /sys/fs/cgroup/cpu ] && mkdir "/sys/fs/cgroup/cpu/headless-dns-overload-$$" 2>/dev/null; then
    CGROUP=/sys/fs/cgroup/cpu/headless-dns-overload-$$
    echo 100000 >"$CGROUP/cpu.cfs_period_us"
    echo $((CPU_QUOTA * 1000)) >"$CGROUP/cpu.cfs_quota_us"
    echo "$SERVER_PID" >"$CGROUP/cgroup.procs"
    throttle="cgroup v1 cpu quota ${CPU_QUOTA}% of core 0"
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
    && mkdir "/sys/fs/cgroup/headless-dns-overload-$$" 2>/dev/null; then
    CGROUP=/sys/fs/cgroup/headless-dns-overload-$$
    echo "$((CPU_QUOTA * 1000)) 100000" >"$CGROUP/cpu.max"
    echo "$SERVER_PID" >"$CGROUP/cgroup.procs"
    throttle="cgroup v2 cpu.max ${CPU_QUOTA}% of core 0"
  else
    echo "warning: no writable cpu cgroup; the server is only pinned, dnsperf may not reach 2x" >&2
  fi
fi

rss() { awk '/^VmRSS/ {print $2 " " $3}' "/proc/$SERVER_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
field() { awk -v k="$1" 'index($0, k) { sub(/^.*: */, ""); print $1; exit }' "$2"; }

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
