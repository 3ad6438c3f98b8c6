#!/usr/bin/env bash
# Validates Kubernetes manifests strictly (unknown fields refused) and offline: custom
# resources against e2e/crds, the shared CRD set copied (or $LLM_EXTPROC_CRDS), core kinds against the schemas
# kubernetes-validate bundles; kustomize directories are built with `kubectl kustomize`.
#   scripts/validate-manifests.sh [FILE|DIR|KUSTOMIZE-DIR ...]   (default: deploy examples)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -gt 0 ] || set -- "$root/deploy" "$root/examples"
exec "$root/.venv/bin/python" "$root/e2e/k8s_manifests.py" "$@"
