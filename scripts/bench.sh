#!/usr/bin/env bash
# Benchmark: the gateway vs. the same Envoy proxying straight to the same fast upstream,
# interleaved in one run, per scenario (OpenAI, OpenAI to Anthropic Messages, to Bedrock
# Converse, to Bedrock ConverseStream). Prints the RPS ratio at 16 connections, the added
# p50/p99 at 1 connection, and the sidecar's RSS. Arguments go to e2e/bench.py (--rounds,
# --seconds per scenario; --scenario openai|anthropic|bedrock|bedrock-stream|all; --pin for
# fixed CPUs with taskset; --scale for the scale figures: RSS idle and with 1,000 open
# streams, CPU per request by body size, added time-to-first-token).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "bench: needs wrk (sudo apt-get install wrk)" >&2
    exit 1
  fi
fi
cargo build --release --quiet --bin llm-extproc --example bench_upstream
exec .venv/bin/python e2e/bench.py "$@"
