#!/usr/bin/env bash
# Install the pinned toolchains for Python and JavaScript projections, if missing:
#
#   $TOOLS/py/bin/componentize-py          (a venv; pins in scripts/guest-tools/requirements.txt)
#   $TOOLS/js/node_modules/.bin/jco        (jco + componentize-qjs; pins in
#                                           scripts/guest-tools/package.json + package-lock.json)
#
# TOOLS is ${PROJECTOR_TOOLS:-$HOME/.cache/projector/tools}. Usage:
#   bash scripts/setup-guest-langs.sh [py|js|all]      (default: all)
#
# Idempotent and silent when everything is installed: each install leaves a stamp holding
# the hash of the pin files it used, and a changed pin file reinstalls. Needs python3 (with
# venv) for py, node >= 20 and npm for js. npm runs with --ignore-scripts: every package
# in the lock ships prebuilt binaries as optional dependencies, so nothing needs an
# install script (and npm 11's install-script approval never comes up).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pins="$here/guest-tools"
tools="${PROJECTOR_TOOLS:-$HOME/.cache/projector/tools}"
which="${1:-all}"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

setup_py() {
  local dir="$tools/py" stamp want
  want=$(hash_of "$pins/requirements.txt")
  stamp="$dir/.projector-pins"
  if [ -x "$dir/bin/componentize-py" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "setup-guest-langs: python3 is needed" >&2; return 1; }
  echo "installing componentize-py into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$tools"
  python3 -m venv "$dir"
  # pip install componentize-py (the pin is in scripts/guest-tools/requirements.txt)
  "$dir/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    -r "$pins/requirements.txt"
  "$dir/bin/componentize-py" --version >/dev/null
  echo "$want" >"$stamp"
}

setup_js() {
  local dir="$tools/js" stamp want
  want=$(hash_of "$pins/package.json" "$pins/package-lock.json")
  stamp="$dir/.projector-pins"
  if [ -x "$dir/node_modules/.bin/jco" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  command -v npm >/dev/null || { echo "setup-guest-langs: node and npm are needed" >&2; return 1; }
  echo "installing jco + componentize-qjs into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$pins/package.json" "$pins/package-lock.json" "$dir/"
  # npm ci installs @bytecodealliance/jco and componentize-qjs, pinned by the lock file
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  "$dir/node_modules/.bin/jco" --version >/dev/null
  echo "$want" >"$stamp"
}

case "$which" in
  py) setup_py ;;
  js) setup_js ;;
  all) setup_py; setup_js ;;
  *) echo "usage: $0 [py|js|all]" >&2; exit 2 ;;
esac
