#!/usr/bin/env bash
# Fails when the generated files (CRDs, RBAC role, DeepCopy methods, the chart's copies of
# the CRDs and rules) differ from what
# controller-gen makes from the current sources. It regenerates in place, so after a failure
# the tree holds the fresh output: review it and commit it.
set -euo pipefail
make="${1:-make}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"

generated() {
  {
    find config/crd/bases config/rbac/role.yaml api -name 'zz_generated.*.go' -o -path 'config/crd/bases/*' -o -name role.yaml
    find charts/roomsync/templates/crd charts/roomsync/templates/_rules.tpl -type f
  } 2>/dev/null | sort | xargs -r sha256sum
}

before="$(generated)"
${make} --no-print-directory -s manifests generate >/dev/null
after="$(generated)"
if [ "${before}" != "${after}" ]; then
  echo "Generated files were stale; they are regenerated now. Review and commit them:" >&2
  diff <(echo "${before}") <(echo "${after}") >&2 || true
  exit 1
fi
echo "generated files are current"
