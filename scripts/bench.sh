#!/usr/bin/env bash
# The benchmark table: COUNT (default 1,000,000) seeded shop events, every row measured
# in this run on this machine, printed as ONE table at the end (progress on stderr).
#
#   noop / order-summary / customer-stats / both   `projector run --once` over the file
#                                                   (fuel on, and the fuel each module
#                                                   alone used: exact from run to run;
#                                                   "both" with one shared
#                                                   reader, the default, and with each
#                                                   reading on its own; without
#                                                   read-ahead (order-summary alone);
#                                                   "fuel off" too)
#   ten projections, shared / own ingest           noop under ten names: one reader for
#                                                   all against one reader each
#   noop and both over EventStoreDB, the native    tests/esdb.rs's benchmark: the test
#   baseline over it too, and the raw client's     server in-process, the real client
#   ceiling                                         (the native baseline's --esdb mode)
#   rebuild                                         `projector replay order-summary`
#                                                   (offline, a fresh build from event 1)
#   import                                          `projector import` into the test server
#   100 loaded projections                          the noop fixture under 100 names,
#                                                   live on a small file: RSS, idle CPU
#   native baseline                                 bench/native-baseline: the same two
#                                                   read models by hand (rusqlite), and
#                                                   Projector (both) / native, from five
#                                                   interleaved pairs (medians)
#
# COUNT=200000 bash scripts/bench.sh for a quicker run. Rates are source events (lines
# of the file) per second unless a row says otherwise. Progress and each run's own
# summary (where the time went) go to stderr; the table alone goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-1000000}
target=${CARGO_TARGET_DIR:-target}
say() { echo "bench: $*" >&2; }

bash scripts/setup-toolchain.sh >/dev/null
cargo build --release -q -p projector -p shop-events -p esdb-test-server -p native-baseline
work=$(mktemp -d)
server_pid=""
host_pid=""
# Ctrl-C for the host, then (after 20 s) a harder stop.
stop_host() {
  [ -n "$host_pid" ] || return 0
  kill -INT "$host_pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$host_pid" 2>/dev/null || true
  wait "$host_pid" 2>/dev/null || true
  host_pid=""
}
cleanup() {
  stop_host
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Private copies: a rebuild in the shared target dir must not swap them mid-run.
mkdir "$work/bin"
for b in projector shop-events esdb-test-server native-baseline; do
  cp "$target/release/$b" "$work/bin/"
done
bin=$work/bin
export PROJECTOR_CACHE=$work/cache
for g in order-summary customer-stats test-fixtures/noop; do
  "$bin/projector" build "projections/$g" -o "$work/wasm/$(basename "$g").wasm" \
    >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
done
"$bin/shop-events" --count "$COUNT" --seed 42 -o "$work/events.ndjson" 2>/dev/null

rows=()
row() { rows+=("$(printf '| %-52s | %12s | %s |' "$1" "$2" "$3")"); }
# "processed N events ... in S s: R events/s (P projection-events/s); ..." -> "R P S"
rates() { sed -nE 's/^processed .* in ([0-9.]+) s: ([0-9]+) events\/s \(([0-9]+) projection-events\/s\).*/\2 \3 \1/p'; }

# A config over the file with the named modules; prints its path.
config() { # name fuel modules...
  local name=$1 fuel=$2; shift 2
  mkdir -p "$work/$name/modules"
  for m in "$@"; do cp "$work/wasm/$m.wasm" "$work/$name/modules/"; done
  cat > "$work/$name/projector.toml" <<TOML
source = "$work/events.ndjson"
data = "data"
modules = "modules"
[batch]
max_events = 50000
commit_events = 200000
[limits]
fuel_per_event = $fuel
[http]
listen = ""
TOML
  echo "$work/$name/projector.toml"
}

# The fuel a projection's module used over the run (wasmtime's count of the Wasm
# instructions it ran): unlike the rates, the same on every run of the same module, so
# changes to a module compare exactly on this noisy VM.
fuel() { # config name
  "$bin/projector" status --config "$1" --json 2>/dev/null | python3 -c '
import json, sys
name, count = sys.argv[1], int(sys.argv[2])
fuel = next(p["fuel_used"] for p in json.load(sys.stdin) if p["name"] == name)
print(f"fuel {fuel / 1e9:.3f}G = {fuel / count:,.0f} instructions per event")' "$2" "$COUNT"
}

# The noop fixture under N names in a folder: its manifest name "noop" is one i32.const
# in the code (4 bytes); each copy gets "n000", "n001", ... in its place (same length).
noop_copies() { # count folder
  python3 - "$work/wasm/noop.wasm" "$2" "$1" <<'PY'
import sys
def sleb(v):
    out = bytearray()
    while True:
        b = v & 0x7f; v >>= 7
        if (v == 0 and not b & 0x40) or (v == -1 and b & 0x40):
            out.append(b); return bytes(out)
        out.append(b | 0x80)
src, out, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
wasm = open(src, "rb").read()
old = b"\x41" + sleb(int.from_bytes(b"noop", "little"))
assert wasm.count(old) == 1, "the noop fixture changed: its name is not one i32.const"
for i in range(count):
    name = b"n%03d" % i
    new = b"\x41" + sleb(int.from_bytes(name, "little"))
    assert len(new) == len(old)
    open(f"{out}/{name.decode()}.wasm", "wb").write(wasm.replace(old, new))
PY
}

# 1. Projections over the file.
both_rate=""
for spec in "noop:10000000:noop" "order-summary:10000000:order-summary" \
            "customer-stats:10000000:customer-stats" \
            "both:10000000:order-summary customer-stats" \
            "both-own:10000000:order-summary customer-stats" \
            "order-summary-no-read-ahead:10000000:order-summary" \
            "both-fuel-off:0:order-summary customer-stats"; do
  IFS=: read -r name fuel mods <<<"$spec"
  say "$name over the file"
  # shellcheck disable=SC2086
  cfg=$(config "$name" "$fuel" $mods)
  # Each projection reading the file on its own: the host before the shared reader.
  [ "$name" = both-own ] && sed -i '/^commit_events/a shared_ingest = false' "$cfg"
  # The runner reading its next batch only when it needs it (no read-ahead thread). With
  # both projections on two cores the default reads ahead no more (no core is spare), so
  # what read-ahead brings shows with one.
  [ "$name" = order-summary-no-read-ahead ] && sed -i '/^commit_events/a read_ahead = false' "$cfg"
  # The host's summary (where the time went) goes to stderr; the table takes the rates.
  # (`tee -a`: a stderr redirected to a file is appended to; plain `tee` reopened and
  # truncated it, losing the progress before.)
  read -r rate prate secs < <("$bin/projector" run --config "$cfg" --once 2>/dev/null \
    | tee -a /dev/stderr | rates)
  case $name in
    noop) row "noop (host + Wasm boundary only)" "$rate" "${secs} s; $(fuel "$cfg" noop)" ;;
    both) both_rate=$rate
          row "both shop projections" "$rate" "${prate} projection-events/s, ${secs} s" ;;
    both-own) row "both, each reading the file on its own" "$rate" "${prate} projection-events/s, ${secs} s (shared_ingest = false)" ;;
    order-summary-no-read-ahead) row "order-summary alone, no read-ahead" "$rate" "${secs} s (read_ahead = false)" ;;
    both-fuel-off) row "both, fuel metering off" "$rate" "${prate} projection-events/s, ${secs} s" ;;
    *) row "$name alone" "$rate" "${secs} s; $(fuel "$cfg" "$name")" ;;
  esac
done

# 1b. Ten projections over the file (noop under ten names, every event each): one shared
# reader for all (the default) against each reading the file on its own.
for mode in shared own; do
  say "ten projections, $mode ingest"
  cfg=$(config "ten-$mode" 10000000)
  noop_copies 10 "$work/ten-$mode/modules"
  [ "$mode" = own ] && sed -i '/^commit_events/a shared_ingest = false' "$cfg"
  read -r rate prate secs < <("$bin/projector" run --config "$cfg" --once 2>/dev/null \
    | tee -a /dev/stderr | rates)
  row "ten projections, $mode ingest" "$rate" "${prate} projection-events/s, ${secs} s"
done

# 2. Rebuild: a fresh build of order-summary from the first event, offline.
say "rebuild (replay order-summary)"
t0=$(date +%s.%N)
"$bin/projector" replay --config "$work/both/projector.toml" order-summary >/dev/null 2>&1
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc -l)
row "rebuild order-summary (projector replay)" "$(echo "$COUNT / $secs" | bc)" \
  "$(printf '%.1f s for %s events, both builds on disk' "$secs" "$COUNT")"

# 3. The EventStoreDB path against the raw client's ceiling, same data, same run.
say "EventStoreDB path ($COUNT events through the test server and the real client)"
esdb=$(BENCH_EVENTS=$COUNT BENCH_NATIVE=$bin/native-baseline cargo test --release -q -p projector --test esdb bench_esdb \
  -- --ignored --nocapture 2>/dev/null | grep -E '^esdb path' || true)
declare -A esdb_rate # NAMES -> events/s, for the ratio below
esdb_row() { # esdb_row LABEL NAMES: the line of the test's output for those projections
  local line raw prj rate share
  line=$(grep -F "$2:" <<<"$esdb" || true)
  raw=$(sed -nE 's/.*raw client subscription ([0-9]+) events\/s.*/\1/p' <<<"$line")
  prj=$(sed -nE 's/.*(projector|native baseline) ([0-9]+) events\/s = ([0-9]+)% of the raw ceiling.*/\2 \3/p' <<<"$line")
  if [ -n "$raw" ] && [ -n "$prj" ]; then
    read -r rate share <<<"$prj"
    esdb_rate[$2]=$rate
    row "$1" "$rate" "${share}% of the raw client ceiling, ${raw} events/s measured in the same run"
  else
    row "$1" "failed" "see: cargo test --release -p projector --test esdb bench_esdb -- --ignored"
  fi
}
# The noop row is the ingest path alone (client, events to the runner, Wasm boundary).
esdb_row "noop over EventStoreDB (test server, real client)" "noop"
esdb_row "both over EventStoreDB (test server, real client)" "order-summary + customer-stats"
# The same two read models by hand over the same server: what code without a sandbox
# reaches on this path when the server shares the machine's cores.
esdb_row "native baseline over EventStoreDB (same server)" "native baseline"
eb=${esdb_rate["order-summary + customer-stats"]:-}
en=${esdb_rate["native baseline"]:-}
if [ -n "$eb" ] && [ -n "$en" ]; then
  row "ratio over EventStoreDB, Projector (both) / native" \
    "$(printf '%.2f' "$(echo "$eb / $en" | bc -l)")" "single runs against the same server in the same run"
fi

# 4. Import into the test server (batch append, pipelined).
say "import"
"$bin/esdb-test-server" --listen 127.0.0.1:0 > "$work/server.out" 2>/dev/null &
server_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -nE 's/^listening on ([^ ]+) .*/\1/p' "$work/server.out")
imp=$("$bin/projector" import --source "$work/events.ndjson" --to "$url" 2>/dev/null)
again=$("$bin/projector" import --source "$work/events.ndjson" --to "$url" 2>/dev/null)
kill "$server_pid"; server_pid=""
per_s() { sed -nE 's/.* in ([0-9.]+) s: ([0-9]+) events\/s.*/\2 \1/p'; }
read -r rate secs < <(per_s <<<"$imp")
read -r rate2 _ < <(per_s <<<"$again")
row "import into EventStoreDB (test server)" "$rate" \
  "${secs} s; importing again (appends nothing): ${rate2} events/s; before: ~22 events/s"

# 5. 100 loaded projections, live on a small file: resident memory and idle CPU.
say "100 loaded projections"
mkdir -p "$work/hundred/modules"
head -n 1000 "$work/events.ndjson" > "$work/hundred/events.ndjson"
noop_copies 100 "$work/hundred/modules"
cat > "$work/hundred/projector.toml" <<TOML
source = "events.ndjson"
data = "data"
modules = "modules"
[http]
listen = ""
TOML
"$bin/projector" run --config "$work/hundred/projector.toml" >/dev/null 2>"$work/hundred/log" &
host_pid=$!
ticks() { awk '{print $14 + $15}' "/proc/$host_pid/stat"; }
hz=$(getconf CLK_TCK)
# Loaded (100 modules compiled) and caught up with the file.
loaded=0
for _ in $(seq 600); do
  loaded=$("$bin/projector" status --config "$work/hundred/projector.toml" 2>/dev/null \
    | grep -c ' caught-up ' || true)
  [ "$loaded" -ge 100 ] && break
  sleep 0.5
done
sleep 2
a=$(ticks); sleep 10; b=$(ticks)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$host_pid/status")
stop_host
row "100 loaded projections, idle (caught up, live)" "-" \
  "$((rss / 1024)) MiB RSS, $(printf '%.0f' "$(echo "100 * ($b - $a) / $hz / 10" | bc -l)")% of one core while idle; ${loaded} of 100 caught up"

# 6. The native baseline: the same two read models by hand. This VM's speed drifts by
# up to 1.5x within minutes, so the ratio comes from five interleaved pairs (both
# through Projector, then native, each from scratch), median against median.
say "native baseline, interleaved with both"
PAIRS=5
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
pb=(); pn=()
for i in $(seq $PAIRS); do
  rm -rf "$work/both/data"
  rate=$("$bin/projector" run --config "$work/both/projector.toml" --once 2>/dev/null \
    | tee -a /dev/stderr | rates | cut -d' ' -f1) \
    || { say "both (interleaved run $i) failed"; exit 1; }
  [ -n "$rate" ] || { say "both (interleaved run $i) printed no rate"; exit 1; }
  pb+=("$rate")
  rm -f "$work/native.sqlite"
  check=(); [ "$i" = 1 ] && check=(--check)
  nat=$("$bin/native-baseline" "$work/events.ndjson" "$work/native.sqlite" "${check[@]}") \
    || { say "native baseline (run $i) failed"; exit 1; }
  rate=$(sed -nE 's/^native baseline: .* ([0-9]+) events\/s$/\1/p' <<<"$nat")
  [ -n "$rate" ] || { say "native baseline (run $i) printed no rate: $nat"; exit 1; }
  pn+=("$rate")
done
nrate=$(median "${pn[@]}")
brate=$(median "${pb[@]}")
row "native baseline (Rust + rusqlite, both read models)" "$nrate" \
  "median of ${pn[*]}; one thread, one transaction per 10,000 events; tables checked against the fold"
row "both shop projections, interleaved with native" "$brate" "median of ${pb[*]}"
row "ratio Projector (both) / native" "$(printf '%.2f' "$(echo "$brate / $nrate" | bc -l)")" \
  "medians of the $PAIRS interleaved pairs (the single run above: $(printf '%.2f' "$(echo "$both_rate / $nrate" | bc -l)"))"

echo
echo "Projector benchmark: $COUNT shop events (seed 42), $(nproc) cores, $(date +%F)"
printf '| %-52s | %12s | %s |\n' "run" "events/s" "notes"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..54})" "$(printf -- '-%.0s' {1..14})" "-------"
printf '%s\n' "${rows[@]}"
