#!/usr/bin/env bash
# Install kubernetes-validate (pinned; it carries the Kubernetes schemas, no network at
# validation time) into $PROJECTOR_TOOLS/k8s, for the test that checks deploy/k8s.
set -euo pipefail
tools="${PROJECTOR_TOOLS:-$HOME/.cache/projector/tools}"
dir="$tools/k8s"
pin="kubernetes-validate==1.37.0"
if [ -x "$dir/bin/kubernetes-validate" ] && [ "$(cat "$dir/.projector-pin" 2>/dev/null)" = "$pin" ]; then
  exit 0
fi
echo "installing $pin into $dir" >&2
rm -rf "$dir"
mkdir -p "$tools"
python3 -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check "$pin"
echo "$pin" >"$dir/.projector-pin"
