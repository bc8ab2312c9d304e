#!/usr/bin/env python3
"""Judge the output of run_kselftest.sh with the kernel's own KTAP parser.

    ktap-judge.py --kunit KSRC/tools/testing/kunit [--parsed FILE] [--label WORD] LOG

LOG is what run_kselftest.sh printed (a `ULIVE-EXIT rc=` line and anything after it
are ignored). The kernel's parser (tools/testing/kunit/kunit_parser.py, imported from
the kernel tree in use) reads it twice over:

  1. the runner's own document: `TAP version 13`, the plan, one result line per test
     program (`ok N selftests: COLLECTION: TEST`), with each program's output between
     them as `# `-prefixed diagnostics;
  2. each program's output, with the runner's `# ` prefix taken off: that program's
     own KTAP document (ours: one test per suite, its cases nested).

The run fails on anything the parser reports as an error (a version it does not accept,
a test number out of sequence, a missing result line, fewer results than planned), a
missing plan, a result line after the plan is complete, a failed or crashed test, and
a program whose exit code disagrees with its own KTAP. Prints `FAIL: ...` for each
reason, then the case counts; exits 1 if the run failed.
"""

import argparse
import io
import re
import sys

HEADER = re.compile(r'^# selftests: (\S+): (\S+)$')


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('--kunit', required=True, help='the kernel tree\'s tools/testing/kunit')
    ap.add_argument('--parsed', help='write the parser\'s own report here')
    ap.add_argument('--label', default='cases', help='the summary line\'s first word')
    ap.add_argument('log')
    args = ap.parse_args()
    sys.dont_write_bytecode = True  # leave the kernel tree as it is
    sys.path.insert(0, args.kunit)
    import kunit_parser as kp  # pylint: disable=import-outside-toplevel
    import kunit_printer  # pylint: disable=import-outside-toplevel

    report = io.StringIO()
    printer = kunit_printer.Printer(output=report)
    fails = []

    def parse(lines, where):
        """Parse one KTAP document; returns the main Test or None."""
        start = len(report.getvalue())
        printer.print(f'---- {where}')
        stream = kp.extract_tap_lines(lines)
        if not stream:
            fails.append(f'{where}: no KTAP/TAP version line')
            return None
        test = kp.parse_test(stream, 0, [], False, printer)
        if test.status != kp.TestStatus.NO_TESTS:
            test.status = test.counts.get_status()
        kp.print_summary_line(test, printer)
        for line in report.getvalue()[start:].splitlines():
            if '[ERROR]' in line:
                fails.append(f'KTAP parser: {where}: {line.split("[ERROR]", 1)[1].strip()}')
        if test.expected_count is None:
            fails.append(f'KTAP: {where}: no plan line (1..N)')
        structural = (kp.TEST_RESULT, kp.TEST_PLAN, kp.KTAP_START, kp.TAP_START, kp.TEST_HEADER)
        extra = [l for l in stream if any(r.match(l) for r in structural)]
        if extra:
            fails.append(f'KTAP: {where}: {len(extra)} line(s) after the plan was complete, first: {extra[0]!r}')
        return test

    def leaves(test, path):
        if not test.subtests:
            yield path, test
        for sub in test.subtests:
            name = sub.name or '(no result)'
            yield from leaves(sub, f'{path}.{name}' if path else name)

    with open(args.log, errors='replace') as f:
        raw = [l.rstrip('\r\n') for l in f]
    for i, l in enumerate(raw):
        if l.startswith('ULIVE-EXIT '):
            raw = raw[:i]
            break

    top = parse(raw, 'run_kselftest.sh')
    if top is None:
        print('\n'.join(f'FAIL: {m}' for m in fails))
        return 1
    # The runner's reason for a failed program (`# TIMEOUT 900 seconds`, `# exit=139`):
    # the parser keeps only SKIP directives.
    top_start = next(i for i, l in enumerate(raw) if kp.TAP_START.match(l) or kp.KTAP_START.match(l))
    why = {}
    for l in raw[top_start:]:
        m = re.match(r'^not ok ([0-9]+) [^#]* # (.*)$', l)
        if m:
            why.setdefault(int(m.group(1)), m.group(2))
    failed_tests = []
    cases = {'passed': 0, 'failed': 0, 'skipped': 0, 'crashed': 0}
    for num, prog in enumerate(top.subtests, 1):
        heads = [i for i, l in enumerate(prog.log) if HEADER.match(l)]
        if not heads:
            if prog.status != kp.TestStatus.SUCCESS and prog.status != kp.TestStatus.SKIPPED:
                failed_tests.append(prog.name or '(unnamed)')
            continue
        collection, name = HEADER.match(prog.log[heads[-1]]).groups()
        where = f'{collection}:{name}'
        body = []
        for l in prog.log[heads[-1] + 1:]:
            if l == '#' or l.startswith('# '):
                body.append(l[2:])
            else:
                fails.append(f'KTAP: {where}: a program output line without the runner\'s prefix: {l!r}')
        sub = parse(body, where)
        if prog.status not in (kp.TestStatus.SUCCESS, kp.TestStatus.SKIPPED):
            failed_tests.append(f'{where} ({prog.name}{" # " + why[num] if num in why else ""})')
        if sub is None:
            continue
        for path, leaf in leaves(sub, ''):
            if leaf.status not in (kp.TestStatus.SUCCESS, kp.TestStatus.SKIPPED):
                failed_tests.append(f'{where}: {path}')
        c = sub.counts
        for k in cases:
            cases[k] += getattr(c, k)
        want = {kp.TestStatus.SUCCESS: (kp.TestStatus.SUCCESS,),
                kp.TestStatus.SKIPPED: (kp.TestStatus.SKIPPED, kp.TestStatus.NO_TESTS)}.get(prog.status)
        if want and sub.status not in want:
            fails.append(f'KTAP: {where}: the runner says {prog.status.name} (exit code), its KTAP says {sub.status.name}')

    if failed_tests:
        fails.append('failed tests:\n' + '\n'.join(f'    {t}' for t in failed_tests))
    if args.parsed:
        with open(args.parsed, 'w') as f:
            f.write(report.getvalue())
    for m in fails:
        print(f'FAIL: {m}')
    print(f'{args.label}: {cases["passed"]} passed, {cases["failed"] + cases["crashed"]} failed, '
          f'{cases["skipped"]} skipped (kernel KTAP parser, {len(top.subtests)} of {top.expected_count} test programs)')
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
