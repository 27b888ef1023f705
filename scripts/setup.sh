#!/usr/bin/env bash
# Install what a fresh machine lacks for the tests, each step idempotent and quiet when
# done already:
#   - Rust guests: rustup's wasm32 targets, else Debian's rustc-web + rust-web-src + lld-22
#     + wasi-libc (apt-get install, scripts/setup-toolchain.sh);
#   - Python guests: componentize-py 0.25.1 (pip install into a venv) and JavaScript
#     guests: jco 1.35.0 + componentize-qjs 0.4.5 (npm ci from scripts/guest-tools/),
#     both by scripts/setup-guest-langs.sh;
#   - the Kubernetes schema check: kubernetes-validate 1.37.0 (pip install);
#   - the status page test: chromium and chromedriver (apt-get install chromium
#     chromium-driver, scripts/setup-browser.sh).
set -euo pipefail
cd "$(dirname "$0")"
bash setup-toolchain.sh
bash setup-guest-langs.sh
bash setup-k8s-validator.sh
bash setup-browser.sh
