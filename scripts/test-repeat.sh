#!/usr/bin/env bash
# Runs the built tests again and again, to catch one that fails now and
# then (the tests must already be built: `make test-repeat` does that).
# Every run is logged; a failed run's log is kept, with the names of the
# tests that failed in it, and the summary counts runs and failures per
# test. With BUSY=1, two `yes` processes keep the cores busy meanwhile, as
# a loaded CI machine would.
#
# usage: scripts/test-repeat.sh RUNS [FILTER]   (FILTER: swift test's --filter)
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: $0 RUNS [FILTER]}
filter=${2:-}
case "$runs" in ''|*[!0-9]*) echo "$0: RUNS must be a number, not '$runs'" >&2; exit 64 ;; esac
logs=.build/test-repeat
rm -rf "$logs"; mkdir -p "$logs"
arguments=(--skip-build --no-parallel)
[ -n "$filter" ] && arguments+=(--filter "$filter")

busy=()
cleanup() { [ ${#busy[@]} -gt 0 ] && kill "${busy[@]}" 2>/dev/null; }
trap cleanup EXIT
if [ "${BUSY:-0}" = 1 ]; then
    for _ in $(seq "$(nproc)"); do yes >/dev/null & busy+=($!); done
fi

failed=0
started=$SECONDS
for run in $(seq "$runs"); do
    log="$logs/run-$run.log"
    # A hung run is a failure too, not a stalled CI.
    if timeout 1200 swift test "${arguments[@]}" >"$log" 2>&1; then
        rm "$log"
        echo "run $run/$runs: passed ($((SECONDS - started)) s so far)"
    else
        failed=$((failed + 1))
        echo "run $run/$runs: FAILED, log kept in $log; failing tests:"
        grep -E '^✘ Test |error: -\[|^Test Case .* failed' "$log" | sed 's/^/    /' | sort -u | head -20
        grep -E '^✘ Test .* failed after' "$log" | sed 's/ failed after.*//' >> "$logs/failures"
    fi
done
note=${filter:+ (filter: $filter)}
[ "${BUSY:-0}" = 1 ] && note+=", cores kept busy"
echo "$((runs - failed)) of $runs runs passed$note"
if [ "$failed" -gt 0 ]; then
    echo "failures per test:"
    sort "$logs/failures" | uniq -c | sort -rn | sed 's/^/  /'
    exit 1
fi
