#!/usr/bin/env bash
# The shop example through the EventStoreDB path, with no server to install: the
# protocol-level test server (host/esdb-test-server) serves the events, and the host
# reads them through the real KurrentDB client. COUNT=... events (default 1,000,000).
# Against a real server: `projector import` the file, then `projector run --source esdb://…`.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${COUNT:-1000000}
PORT=${PORT:-21130}
bin=${CARGO_TARGET_DIR:-target}/release

bash scripts/setup-toolchain.sh
cargo build --release -p projector -p shop-events -p esdb-test-server
"$bin/projector" build projections/order-summary
"$bin/projector" build projections/customer-stats
"$bin/shop-events" --count "$COUNT" --seed 42 -o examples/shop/events.ndjson

"$bin/esdb-test-server" --listen "127.0.0.1:$PORT" --events examples/shop/events.ndjson &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

rm -rf examples/shop/data-esdb
"$bin/projector" run --config examples/shop/projector.toml --once \
  --source "esdb://127.0.0.1:$PORT?tls=false" --data examples/shop/data-esdb
echo "orders by status (from the server):"
"$bin/projector" query --data examples/shop/data-esdb order-summary \
  "SELECT status, count(*) AS orders FROM orders GROUP BY status ORDER BY status"
