#!/usr/bin/env bash
# The harness must be able to fail. Boot the guest once per injected fault (a failing
# test, a malformed KTAP line, a suite past its kselftest timeout, a kernel WARNING, a kernel panic, a hung guest) and
# require vm.sh to go red for that very reason (a run that fails for another reason
# does not count). Before that, scripts/ktap-judge-test.py checks the judge on the host.
. "$(dirname "$0")/common.sh"
declare -A expect=(
    [fail]="FAIL: failed tests"
    [ktap]="FAIL: KTAP parser: udmabuf-live:module: Test: planted_malformed_result_line: Expected test number 2 but found 1"
    [timeout]="# TIMEOUT 5 seconds)"
    [warn]="FAIL: kernel reports"
    [panic]="Kernel panic"
    [hang]="FAIL: guest timed out"
)
# First on the host: the KTAP judge itself, over made-up runner logs, good and bad.
KB=$KBUILD_DIR
KSRC=$KB; [ -e "$KB/source" ] && KSRC=$(readlink -f "$KB/source")
log "harness self-test: the KTAP judge on made-up logs"
python3 "$ROOT/scripts/ktap-judge-test.py" "$KSRC/tools/testing/kunit" || die "the KTAP judge misjudges made-up logs"
faults=(fail ktap timeout warn panic hang)
# The boots are independent (vm.sh keeps each tag's files apart) and mostly wait (the hang
# boot idles for its whole timeout), so SELFTEST_JOBS of them (default 3) run at a time.
njobs=${SELFTEST_JOBS:-3}
boot() {
    local fault=$1 tmo=300
    [ "$fault" = hang ] && tmo=20
    local rc=0
    # A small guest: the injected boots run only the module suite (no huge pages), and
    # a smaller memory map boots faster under TCG, beside the real run.
    # Niced: beside the real run (make test) they take only the CPU its guest leaves idle.
    ULIVE_INJECT=$fault VM_TIMEOUT=$tmo VM_MEM=1G VM_HUGEPAGES=0 nice -n 10 "$ROOT/scripts/vm.sh" test > "$OUT/selftest-$fault.out" 2>&1 || rc=$?
    echo $rc > "$OUT/selftest-$fault.rc"
}
log "harness self-test: injecting ${faults[*]}, each in its own boot ($njobs at a time), expecting a red run from each"
for fault in "${faults[@]}"; do
    rm -f "$OUT/selftest-$fault.rc"
    while (( $(jobs -rp | wc -l) >= njobs )); do wait -n || true; done
    boot "$fault" &
done
wait
fails=0
for fault in "${faults[@]}"; do
    out=$OUT/selftest-$fault.out
    rc=$(cat "$OUT/selftest-$fault.rc" 2>/dev/null || echo missing)
    if [ "$rc" = 0 ]; then
        echo "not ok: injected '$fault' but the harness passed (see $out)"; fails=$((fails + 1))
    elif ! grep -q "${expect[$fault]}" "$out"; then
        echo "not ok: injected '$fault', the run failed (rc $rc) but not with '${expect[$fault]}' (see $out)"; fails=$((fails + 1))
    else
        echo "ok: injected '$fault' -> $(grep -m1 '^FAIL' "$out")"
    fi
done
echo "harness self-test: $((${#faults[@]} - fails)) passed, $fails failed"
[ $fails = 0 ]
