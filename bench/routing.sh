#!/usr/bin/env bash
# What routing (SPEC §14) costs per delivery, as ratios against one plain route
# measured in the same run: user-space instructions per delivery (callgrind,
# bench/instructions.sh) for one plain route, one route with a two-field
# filter, one route with a jq transform of the bench body, and fan-out to three
# sync routes.
#
#   bash bench/routing.sh            # this tree's release build
#   DURATION=12 bash bench/routing.sh /tmp/hookgate-a
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then BIN=$(realpath "$1"); else cargo build --release --quiet; BIN=$PWD/target/release/hookgate; fi
declare -A per
for variant in plain filter transform fanout3; do
  line=$(BENCH_ROUTES=$variant bash bench/instructions.sh "$BIN" | tail -1)
  per[$variant]=$(sed -n 's/.*, \([0-9]*\) per delivery.*/\1/p' <<<"$line")
  echo "$variant: $line"
done
for variant in filter transform fanout3; do
  awk -v a="${per[$variant]}" -v b="${per[plain]}" -v v="$variant" \
    'BEGIN {printf "%-9s %7d per delivery  x%.3f of one plain route (%+.1f%%)\n", v, a, a / b, (a / b - 1) * 100}'
done
