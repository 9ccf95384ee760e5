#!/usr/bin/env bash
# Runs every native Go fuzz target of the module (func FuzzX(f *testing.F) in a _test.go file),
# one after another: go test fuzzes one target per package run.
#
#   hack/fuzz.sh                       # each target for FUZZTIME (default 60s)
#   FUZZTIME=3s hack/fuzz.sh           # a short pass, as `make test` runs
#   FUZZTIME=2000x hack/fuzz.sh        # a number of executions instead of a time
#   hack/fuzz.sh FuzzVerifyPDU ...     # only the targets named
#
# FUZZ_PARALLEL sets go test's -parallel (the fuzz workers; default: GOMAXPROCS).
# FUZZ_MINIMIZE_TIME bounds the minimizing of each new input (default 5s): go test minimizes
# every input that widens coverage, for up to a minute by default, and counts no executions
# meanwhile, which leaves a short run little time to fuzz.
#
# A failing input is written to the package's testdata/fuzz/FuzzX/ and the run stops there:
# commit it with the fix, as a regression case that every `go test` then runs.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
fuzztime="${FUZZTIME:-60s}"
minimize="${FUZZ_MINIMIZE_TIME:-5s}"
parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then
  parallel=(-parallel "${FUZZ_PARALLEL}")
fi

# Each target as package-directory:FuzzName, in a stable order.
targets=$(grep -r --include='*_test.go' --exclude-dir=bin --exclude-dir=.git -o '^func Fuzz[A-Za-z0-9_]*(' . |
  sed -E 's|^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1:\2|' | sort -u)
if [ "$#" -gt 0 ]; then
  wanted=$(printf '%s\n' "$@")
  targets=$(printf '%s\n' "${targets}" | grep -E ":($(printf '%s' "${wanted}" | paste -sd'|'))\$" || true)
fi
[ -n "${targets}" ] || { echo "fuzz.sh: no fuzz target found" >&2; exit 1; }

start=$(date +%s)
for target in ${targets}; do
  pkg="${target%%:*}"
  name="${target##*:}"
  echo "fuzz.sh: ${name} in ${pkg} for ${fuzztime}"
  t0=$(date +%s)
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "${fuzztime}" -fuzzminimizetime "${minimize}" \
    "${parallel[@]}" "${pkg}/"; then
    echo "fuzz.sh: ${name} failed: its failing input is in ${pkg}/testdata/fuzz/${name}/" >&2
    exit 1
  fi
  echo "fuzz.sh: ${name} done in $(( $(date +%s) - t0 ))s"
done
echo "fuzz.sh: $(printf '%s\n' "${targets}" | wc -l) targets in $(( $(date +%s) - start ))s"
