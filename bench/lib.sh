# Shared parts of the bench/ scripts (sourced, not run): a synthetic cluster
# as manifests, the query mix, starting the release server on it, and a CPU
# quota by cgroup. The callers set PORT, SERVICES and PODS, then call
# bench_prepare.

SERVER_PID=
CGROUP=

# Stops the server and removes its cgroup.
bench_stop() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [ -n "$CGROUP" ] && rmdir "$CGROUP" 2>/dev/null || true
  SERVER_PID=
  CGROUP=
}

bench_cleanup() {
  bench_stop
  rm -rf "$WORK"
}

# Checks the tools, makes WORK (removed on exit), builds the server and
# writes the cluster and the query mix into WORK. $1: the caller's name.
bench_prepare() {
  for tool in dnsperf dig taskset; do
    command -v "$tool" >/dev/null || { echo "$1: needs $tool (apt-get install dnsperf dnsutils util-linux)" >&2; exit 2; }
  done
  WORK=$(mktemp -d)
  trap bench_cleanup EXIT
  bench_build
  bench_manifests >"$WORK/manifests.yaml"
  bench_queries >"$WORK/queries.txt"
}

# Builds the release binary (bounded) and sets BIN.
bench_build() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
  timeout 1800 cargo build --release --locked -j2 -q
  BIN=$CARGO_TARGET_DIR/release/headless-dns
}

# SERVICES headless services of PODS StatefulSet-style endpoints each:
# web-K.svc-J.default.svc.cluster.local -> 10.20.J.(K+1) (so SERVICES <= 256)
bench_manifests() {
  for ((j = 0; j < SERVICES; j++)); do
    cat <<YAML
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
YAML
    for ((k = 0; k < PODS; k++)); do
      echo "  - {addresses: [\"10.20.$j.$((k + 1))\"], hostname: web-$k}"
    done
  done
}

# Query mix: 70% pod A, 20% service A (PODS records), 5% SRV with glue, 5% NXDOMAIN.
bench_queries() {
  awk -v s="$SERVICES" -v p="$PODS" 'BEGIN {
    srand(7);
    for (i = 0; i < 20000; i++) {
      j = int(rand() * s); k = int(rand() * p); r = rand();
      if (r < 0.70)      print "web-" k ".svc-" j ".default.svc.cluster.local A";
      else if (r < 0.90) print "svc-" j ".default.svc.cluster.local A";
      else if (r < 0.95) print "_web._tcp.svc-" j ".default.svc.cluster.local SRV";
      else               print "nope-" i ".svc-" j ".default.svc.cluster.local A";
    }
  }'
}

# Starts the server on the manifests with $1 UDP threads on CPUs $2 and
# waits (10 s at most) until the last pod answers. BENCH_SERVER_ARGS: more
# arguments for `serve` (say, `--config FILE`).
bench_start() {
  # shellcheck disable=SC2086 # BENCH_SERVER_ARGS is a list of words
  RUST_LOG=warn taskset -c "$2" "$BIN" serve --manifests "$WORK/manifests.yaml" \
    --listen "127.0.0.1:$PORT" --threads "$1" --admin none ${BENCH_SERVER_ARGS:-} >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  local last="web-$((PODS - 1)).svc-$((SERVICES - 1)).default.svc.cluster.local"
  local want="10.20.$((SERVICES - 1)).$PODS"
  for _ in $(seq 100); do
    [ "$(dig +short +tries=1 +timeout=1 @127.0.0.1 -p "$PORT" "$last" A 2>/dev/null)" = "$want" ] && return 0
    sleep 0.1
  done
  echo "server did not come up" >&2
  cat "$WORK/server.log" >&2
  return 1
}

# Holds the server to $1 percent of one CPU (a cgroup v1 or v2 cpu quota;
# needs root). Sets THROTTLE to a description; returns 1 when no cgroup is
# writable.
bench_limit_cpu() {
  local name="headless-dns-bench-$$-$RANDOM"
  if [ -w /sys/fs/cgroup/cpu ] && mkdir "/sys/fs/cgroup/cpu/$name" 2>/dev/null; then
    CGROUP=/sys/fs/cgroup/cpu/$name
    echo 100000 >"$CGROUP/cpu.cfs_period_us"
    echo $(($1 * 1000)) >"$CGROUP/cpu.cfs_quota_us"
    THROTTLE="cgroup v1 cpu quota $1% of one core"
  elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
    && mkdir "/sys/fs/cgroup/$name" 2>/dev/null; then
    CGROUP=/sys/fs/cgroup/$name
    echo "$(($1 * 1000)) 100000" >"$CGROUP/cpu.max"
    THROTTLE="cgroup v2 cpu.max $1% of one core"
  else
    return 1
  fi
  echo "$SERVER_PID" >"$CGROUP/cgroup.procs"
}

# Field $1 of a dnsperf report $2 ("Queries per second", "Queries lost", ...).
bench_field() { awk -v k="$1" 'index($0, k) { sub(/^.*: */, ""); print $1; exit }' "$2"; }
