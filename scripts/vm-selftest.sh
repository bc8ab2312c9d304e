#!/usr/bin/env bash
# The harness must be able to fail. Boot the guest once per injected fault (a failing
# test, a malformed KTAP line, a suite past its kselftest timeout, a kernel WARNING, a kernel panic, a hung guest) and
# require vm.sh to go red for that very reason (a run that fails for another reason
# does not count). Before that, scripts/ktap-judge-test.py checks the judge on the host.
. "$(dirname "$0")/common.sh"
declare -A expect=(
    [fail]="FAIL: failed tests"
    [ktap]="FAIL: KTAP parser: udmabuf-live:module: Test: planted_malformed_result_line: Expected test number 2 but found 1"
    [timeout]="# TIMEOUT 10 seconds)"
    [warn]="FAIL: kernel reports"
    [panic]="Kernel panic"
    [hang]="FAIL: guest timed out"
)
# First on the host: the KTAP judge itself, over made-up runner logs, good and bad.
KB=${KBUILD_DIR:?KBUILD_DIR not set}
KSRC=$KB; [ -e "$KB/source" ] && KSRC=$(readlink -f "$KB/source")
log "harness self-test: the KTAP judge on made-up logs"
python3 "$ROOT/scripts/ktap-judge-test.py" "$KSRC/tools/testing/kunit" || die "the KTAP judge misjudges made-up logs"
fails=0
faults=(fail ktap timeout warn panic hang)
for fault in "${faults[@]}"; do
    tmo=300; [ $fault = hang ] && tmo=20
    log "harness self-test: injecting '$fault', expecting a red run"
    out=$OUT/selftest-$fault.out
    if ULIVE_INJECT=$fault VM_TIMEOUT=$tmo "$ROOT/scripts/vm.sh" test > "$out" 2>&1; then
        echo "not ok: injected '$fault' but the harness passed (see $out)"; fails=$((fails + 1))
    elif ! grep -q "${expect[$fault]}" "$out"; then
        echo "not ok: injected '$fault', the run failed but not with '${expect[$fault]}' (see $out)"; fails=$((fails + 1))
    else
        echo "ok: injected '$fault' -> $(grep -m1 '^FAIL' "$out")"
    fi
done
echo "harness self-test: $((${#faults[@]} - fails)) passed, $fails failed"
[ $fails = 0 ]
