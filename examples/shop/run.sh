#!/usr/bin/env bash
# Build everything, generate shop events, run both shop projections to the end, and
# show a few rows. COUNT=... sets the number of events (default 1,000,000).
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${COUNT:-1000000}
bin=${CARGO_TARGET_DIR:-target}/release

bash scripts/setup-toolchain.sh
cargo build --release -p projector -p shop-events
"$bin/projector" build projections/order-summary
"$bin/projector" build projections/customer-stats
"$bin/shop-events" --count "$COUNT" --seed 42 -o examples/shop/events.ndjson
rm -rf examples/shop/data
"$bin/projector" run --config examples/shop/projector.toml --once

echo "top customers by lifetime value:"
"$bin/projector" query --data examples/shop/data customer-stats \
  "SELECT customer_id, orders, confirmed, cancelled, lifetime_value_cents FROM customers ORDER BY lifetime_value_cents DESC LIMIT 5"
echo "orders by status:"
"$bin/projector" query --data examples/shop/data order-summary \
  "SELECT status, count(*) AS orders, sum(total_cents) AS total_cents FROM orders GROUP BY status ORDER BY status"
