#!/usr/bin/env bash
# Zone transfer lag (issue 18): the release server on the embedded demo with
# its simulator, Knot and BIND as secondaries on loopback (NOTIFY + IXFR),
# each twice: with its stock settings and with the one setting that stops it
# holding back a refresh that follows its previous transfer closely (Knot:
# block-notify-after-transfer: on; BIND: serial-query-rate 1000; see
# `Pacing` in tests/transfer_support/secondary.rs), and 20 recreates of web-1. Each recreate is two changes: the pod's deletion
# (its old address goes) and, LAG_READY_MS later (the simulator's ready
# delay, default 100), the new pod ready (its new address comes). Prints, for
# each secondary, the median and worst time from the primary to the
# secondary for both, and the IXFR journal's bytes per change. Not a test:
# no pass/fail on timing beyond the 3 s correctness bound the tests assert.
#
# The measurement is the ignored test `transfer_lag` in
# tests/transfer_secondaries.rs (it shares the secondaries' set-up with the
# tests), built with the release profile.
#
# Usage: bench/transfer_lag.sh   (needs knotd, kdig and named: apt-get install knot knot-dnsutils bind9)
# Env:   LAG_READY_MS (100)
# Bounded: the build has 30 minutes, the run 3.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in /usr/sbin/knotd /usr/sbin/named; do
  [ -x "$tool" ] || { echo "transfer_lag.sh: needs $tool (apt-get install knot bind9)" >&2; exit 2; }
done
timeout 1800 cargo test --release --locked -j2 -q --test transfer_secondaries --no-run
timeout 180 cargo test --release --locked -j2 -q --test transfer_secondaries transfer_lag \
  -- --ignored --nocapture --test-threads=1 2>&1 | grep -E "^(sim|Knot|Bind|journal)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (2 shared cores; compare runs from the same machine only)"
