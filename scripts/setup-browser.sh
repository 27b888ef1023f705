#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser test (host/tests/page.rs),
# if missing:
#
#   /usr/bin/chromium        (package chromium)
#   /usr/bin/chromedriver    (package chromium-driver)
#
# Idempotent and silent when both are installed. Runs apt-get directly as root, through
# sudo otherwise. Usage:
#   bash scripts/setup-browser.sh
set -euo pipefail

missing=()
# Without its recommends (printer tools, mesa, upower), but with the fonts it recommends.
# apt-get install chromium chromium-driver fonts-liberation, for what is missing:
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-liberation)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "setup-browser: need root or sudo to install ${missing[*]}" >&2
  exit 1
fi

echo "setup-browser: installing ${missing[*]}" >&2
# `sudo env ...` keeps DEBIAN_FRONTEND where sudo resets the environment.
# apt's chatter is shown only when a step fails.
apt() {
  local log
  if ! log=$("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" 2>&1); then
    echo "$log" >&2
    echo "setup-browser: apt-get $1 failed" >&2
    exit 1
  fi
}
apt update -qq
apt install -y -qq --no-install-recommends "${missing[@]}"

for bin in chromium chromedriver; do
  command -v "$bin" >/dev/null 2>&1 || { echo "setup-browser: $bin still missing" >&2; exit 1; }
done
chromedriver --version >&2
