#!/usr/bin/env bash
# The harness must be able to fail. Boot the guest once per injected fault (a failing
# test, a kernel WARNING, a kernel panic, a hung guest) and require vm.sh to go red.
. "$(dirname "$0")/common.sh"
fails=0
for fault in fail warn panic hang; do
    tmo=300; [ $fault = hang ] && tmo=45
    log "harness self-test: injecting '$fault', expecting a red run"
    if ULIVE_INJECT=$fault VM_TIMEOUT=$tmo "$ROOT/scripts/vm.sh" test > "$OUT/selftest-$fault.out" 2>&1; then
        echo "not ok: injected '$fault' but the harness passed (see $OUT/selftest-$fault.out)"; fails=$((fails + 1))
    else
        echo "ok: injected '$fault' -> $(grep -m1 '^FAIL' "$OUT/selftest-$fault.out")"
    fi
done
[ $fails = 0 ] && echo "harness self-test: 4 passed, 0 failed" || { echo "harness self-test: $((4 - fails)) passed, $fails failed"; exit 1; }
