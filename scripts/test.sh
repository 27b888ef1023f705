#!/usr/bin/env bash
# Every test: installs what a fresh machine lacks (guest toolchains for Rust, Python and
# JavaScript), then runs the lints, the SDKs' own tests and the workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-toolchain.sh
bash scripts/setup-guest-langs.sh
bash scripts/setup-k8s-validator.sh   # schemas for deploy/k8s
bash scripts/setup-browser.sh   # chromium + chromedriver for the status page test

# Lints: formatting and clippy, warnings are errors.
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings

# The guest SDKs on the host: Rust (the overlay with its base reader injected), Python
# (plain CPython) and JavaScript (node).
cargo test --release --manifest-path projections/Cargo.toml -p projector-sdk
python3 -m unittest discover -s projections/sdk-python -p 'test_*.py' -q
node --test projections/sdk-js/test-sdk.mjs

# The host, against real components built from source by the real toolchains.
cargo test --release --workspace
