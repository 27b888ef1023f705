#!/usr/bin/env bash
# Build a Python or JavaScript projection into a WebAssembly component.
#
#   bash scripts/build-guest.sh py projections/order-summary-py /tmp/order-summary-py.wasm
#   bash scripts/build-guest.sh js projections/order-summary-js /tmp/order-summary-js.wasm
#
# The recipe (`projector build` does the same in Rust):
#   1. the pinned toolchain (scripts/setup-guest-langs.sh; $PROJECTOR_TOOLS or
#      ~/.cache/projector/tools);
#   2. a fresh staging folder holding the projection's top-level source files (*.py, or
#      *.js / *.mjs) and the SDK file next to them (projector_sdk.py / projector-sdk.js);
#   3. the component compiler with every WASI import replaced by a trapping stub, so the
#      component imports nothing but projector:projection (read-model, log):
#        py: componentize-py -d WIT -w projection componentize app -p STAGE --stub-wasi -o OUT
#        js: jco componentize STAGE/app.js --wit WIT -n projection --backend qjs
#              --backend-qjs-disable-async --backend-qjs-stub-wasi -o OUT
#      (jco needs absolute paths: it resolves a relative source against its own cwd twice.)
set -euo pipefail

usage() { echo "usage: $0 <py|js> <projection-dir> <out.wasm>" >&2; exit 2; }
[ $# -eq 3 ] || usage
lang=$1
src=$(cd "$2" && pwd)
out_dir=$(mkdir -p "$(dirname "$3")" && cd "$(dirname "$3")" && pwd)
out="$out_dir/$(basename "$3")"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wit="$root/wit/v0.1"
tools="${PROJECTOR_TOOLS:-$HOME/.cache/projector/tools}"
export PROJECTOR_TOOLS="$tools"

stage=$(mktemp -d "${TMPDIR:-/tmp}/projector-build.XXXXXX")
trap 'rm -rf "$stage"' EXIT

case "$lang" in
  py)
    [ -f "$src/app.py" ] || { echo "build-guest: $src/app.py not found" >&2; exit 1; }
    bash "$root/scripts/setup-guest-langs.sh" py
    cp "$src"/*.py "$stage/"
    cp "$root/projections/sdk-python/projector_sdk.py" "$stage/projector_sdk.py"
    # Run from the staging folder, outside any venv: componentize-py bundles what it
    # finds on its python path.
    (cd "$stage" && env -u VIRTUAL_ENV -u PYTHONPATH \
      "$tools/py/bin/componentize-py" -d "$wit" -w projection \
      componentize app -p "$stage" --stub-wasi -o "$out")
    ;;
  js)
    [ -f "$src/app.js" ] || { echo "build-guest: $src/app.js not found" >&2; exit 1; }
    bash "$root/scripts/setup-guest-langs.sh" js
    cp "$src"/*.js "$stage/"
    for f in "$src"/*.mjs; do [ -e "$f" ] && cp "$f" "$stage/"; done
    cp "$root/projections/sdk-js/projector-sdk.js" "$stage/projector-sdk.js"
    (cd "$stage" && "$tools/js/node_modules/.bin/jco" componentize "$stage/app.js" \
      --wit "$wit" -n projection --backend qjs --backend-qjs-disable-async \
      --backend-qjs-stub-wasi -o "$out" >/dev/null)
    ;;
  *) usage ;;
esac
echo "$out"
