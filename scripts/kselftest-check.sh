#!/usr/bin/env bash
# Run an installed udmabuf-live kselftest collection on this machine and judge it the
# way `make test` judges the guest: the kernel's KTAP parser (scripts/ktap-judge.py over
# tools/testing/kunit/kunit_parser.py), run_kselftest.sh's exit code, and the kernel
# reports (BUG/WARNING/Oops/lockdep/KASAN/...) that appeared in dmesg during the run.
#   scripts/kselftest-check.sh DIR [run_kselftest.sh options]   (default: -c udmabuf-live)
#   scripts/kselftest-check.sh --judge LOG                       (judge a saved log only)
# Environment: KUNIT_DIR (the kernel tree's tools/testing/kunit; else from KBUILD_DIR's
#   source, else the cached 7.2 source), KSFT_LOG (where the run's output goes; default
#   ./udmabuf-live-kselftest.log). Needs root and the module's prerequisites (README).
. "$(dirname "$0")/common.sh"

kunit_dir() {
    if [ -n "${KUNIT_DIR:-}" ]; then echo "$KUNIT_DIR"; return; fi
    local k=${KBUILD_DIR:-$SRC_DIR}
    [ -e "$k/source" ] && k=$(readlink -f "$k/source")
    echo "$k/tools/testing/kunit"
}
KUNIT=$(kunit_dir)
[ -f "$KUNIT/kunit_parser.py" ] || die "no kunit_parser.py in $KUNIT: set KUNIT_DIR to a kernel tree's tools/testing/kunit"

judge() {
    python3 "$ROOT/scripts/ktap-judge.py" --kunit "$KUNIT" --parsed "$1.parsed" "$1"
}

if [ "${1:-}" = --judge ]; then
    judge "${2:?usage: kselftest-check.sh --judge LOG}"
    exit
fi
DIR=${1:?usage: kselftest-check.sh DIR [run_kselftest.sh options]}
shift
[ -x "$DIR/run_kselftest.sh" ] || die "$DIR/run_kselftest.sh missing: make kselftest-install INSTALL_PATH=$DIR"
(($#)) || set -- -c udmabuf-live
LOG=$(realpath -m "${KSFT_LOG:-udmabuf-live-kselftest.log}")

dmesg >/dev/null 2>&1 || log "warning: cannot read dmesg (not root?): kernel reports go unchecked"
before=$( { dmesg 2>/dev/null || true; } | wc -l)
# Through a pipe: run_kselftest.sh appends to /dev/stdout, which on a plain file would
# write over its own output.
set +e
"$DIR/run_kselftest.sh" "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
bad=0
judge "$LOG" || bad=1
[ "$rc" = 0 ] || { echo "FAIL: run_kselftest.sh exited $rc"; bad=1; }
reports=$( { dmesg 2>/dev/null | tail -n +"$((before + 1))" | grep -aE "$KERNEL_REPORTS" || true; } | head -n 20)
if [ -n "$reports" ]; then echo "FAIL: kernel reports in dmesg during the run:"; echo "$reports" | sed 's/^/    /'; bad=1; fi
[ $bad = 0 ] && echo "PASS: $LOG: every test program ok, KTAP accepted by the kernel's parser, no kernel reports"
exit $bad
