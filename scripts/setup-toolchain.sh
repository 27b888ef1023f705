#!/usr/bin/env bash
# Install the guest toolchain if it is missing: rustup's wasm32-unknown-unknown target
# when present, else Debian's rustc-web with its std source (see README, "Building").
# wasm32-wasip1 (WASI guests, e.g. the tests' WASI probe) also needs Debian's wasi-libc.
set -euo pipefail

sysroot=$(rustc --print sysroot 2>/dev/null || true)
if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/wasm32-unknown-unknown" ] \
   && [ -d "$sysroot/lib/rustlib/wasm32-wasip1" ]; then
  echo "guest toolchain: rustup wasm32-unknown-unknown"; exit 0
fi

pkgs=(rustc-web cargo-web rust-web-src lld-22 wasi-libc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "guest toolchain: Debian rustc-web + build-std"; exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "no wasm32 toolchain: run 'rustup target add wasm32-unknown-unknown'" >&2; exit 1
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing guest toolchain: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
echo "guest toolchain: Debian rustc-web + build-std"
