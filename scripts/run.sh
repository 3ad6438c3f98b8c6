#!/usr/bin/env bash
# Runs the gateway standalone: the sidecar plus a real Envoy on port 1975.
# Arguments go to `llm-extproc run` (try --help); with none, the embedded default config
# serves the `demo` model, plus real providers whose keys are in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
exec target/release/llm-extproc run "$@"
