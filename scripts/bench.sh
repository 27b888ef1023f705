#!/usr/bin/env bash
# Throughput benchmark: the two shop projections over COUNT (default 1,000,000) shop
# events, with the sandbox's fuel metering on and off, in the same run. Prints the
# host's summary for each: events/s and where the time went (read, wasm, sqlite, commit).
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000}
bin=${CARGO_TARGET_DIR:-target}/release

bash scripts/setup-toolchain.sh >/dev/null
cargo build --release -q -p projector -p shop-events
"$bin/projector" build projections/order-summary >/dev/null 2>&1
"$bin/projector" build projections/customer-stats >/dev/null 2>&1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/shop-events" --count "$COUNT" --seed 42 -o "$work/events.ndjson" 2>/dev/null
mkdir "$work/modules"
cp target/projections/order-summary.wasm target/projections/customer-stats.wasm "$work/modules/"

for fuel in 10000000 0; do
  cat > "$work/fuel-$fuel.toml" <<TOML
source = "events.ndjson"
data = "data-$fuel"
modules = "modules"
[limits]
fuel_per_event = $fuel
TOML
  echo "== $COUNT events, fuel_per_event = $fuel ($([ "$fuel" = 0 ] && echo "fuel off" || echo "fuel on"))"
  "$bin/projector" run --config "$work/fuel-$fuel.toml" --once 2>/dev/null
done

# The EventStoreDB path: the same shop data served by the protocol-level test server,
# through the real client, against the raw client's subscription ceiling (same run).
echo "== EventStoreDB path (test server in this process; BENCH_EVENTS=${BENCH_EVENTS:-300000})"
cargo test --release -q -p projector --test esdb bench_esdb -- --ignored --nocapture 2>/dev/null \
  | grep -E "esdb path|events read|processed"
