#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, then the end-to-end tests against the
# real Envoy, the real sidecar binary and fake providers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== Kubernetes manifests"
scripts/validate-manifests.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --quiet --all-targets -- -D warnings
echo "== unit tests"
# Golden snapshots are checked, never written: a missing or changed one fails.
INSTA_UPDATE=no cargo test --quiet
echo "== build the sidecar"
cargo build --quiet
echo "== end-to-end tests"
cd e2e
exec ../.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
