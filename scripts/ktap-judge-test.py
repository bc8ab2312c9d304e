#!/usr/bin/env python3
"""Host test of scripts/ktap-judge.py: a good run_kselftest.sh log passes, and each kind
of bad log fails for its own reason. Usage: ktap-judge-test.py KUNIT_DIR"""

import os
import subprocess
import sys
import tempfile

JUDGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ktap-judge.py')


def program(suite, cases, extra=None, runner='ok'):
    """run_kselftest.sh's block for one of our programs: its KTAP, `# `-prefixed."""
    doc = ['KTAP version 1', '1..1', '    KTAP version 1', f'    # Subtest: {suite}', f'    1..{len(cases)}']
    for n, (name, res) in enumerate(cases, 1):
        result, _, directive = res.partition(' # ')
        doc.append(f'    {result} {n} {name}' + (f' # {directive}' if directive else ''))
        if extra and n == 1:
            doc.append(extra)
    bad = any(r.startswith('not ok') for _, r in cases)
    doc.append(f'{"not ok" if bad else "ok"} 1 {suite}')
    return ['# timeout set to 900', f'# selftests: udmabuf-live: {suite}'] + \
        [f'# {l}' if l else '#' for l in doc], runner


def truncated(prog, n):
    """The program's block without its last n lines (it was killed)."""
    block, runner = prog
    return block[:-n], runner


def log(*programs, plan=None, tail=()):
    lines = ['ulive: guest up', 'TAP version 13', f'1..{plan if plan is not None else len(programs)}']
    for n, (block, runner) in enumerate(programs, 1):
        lines += block
        lines.append(f'{runner} {n} selftests: udmabuf-live: {block[1].rsplit(" ", 1)[1]}')
    lines += list(tail) + ['# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0', 'ULIVE-EXIT rc=0']
    return '\n'.join(lines) + '\n'


def judge(kunit, text):
    with tempfile.NamedTemporaryFile('w', suffix='.log', delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([sys.executable, JUDGE, '--kunit', kunit, f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    return r.returncode, r.stdout


def main():
    kunit = sys.argv[1]
    good = [('a', 'ok'), ('b', 'ok # SKIP no huge pages'), ('c', 'ok')]
    cases = [
        ('good run', log(program('create', good), program('live', good)), 0, 'cases: 4 passed, 0 failed, 2 skipped'),
        ('planted line numbered out of sequence',
         log(program('module', good, extra='    ok 1 planted')), 1, 'Expected test number 2 but found 1'),
        ('a failed case', log(program('live', [('a', 'ok'), ('b', 'not ok')], runner='not ok')), 1, 'failed tests'),
        ('fewer programs than planned', log(program('create', good), plan=2), 1, 'missing expected subtest'),
        ('a result after the plan', log(program('create', good), tail=['ok 2 stray']), 1, 'after the plan was complete'),
        ('exit code disagrees with the KTAP',
         log(program('live', [('a', 'ok'), ('b', 'not ok')], runner='ok')), 1, 'its KTAP says FAILURE'),
        ('unsupported version', log(program('create', good)).replace('# KTAP version 1', '# KTAP version 9', 1), 1,
         'KTAP version higher than expected'),
        ('a program killed by the runner\'s timeout',
         log(truncated(program('stress', good), 3), plan=1).replace('ok 1 selftests: udmabuf-live: stress',
                                                            'not ok 1 selftests: udmabuf-live: stress # TIMEOUT 10 seconds'),
         1, 'stress # TIMEOUT 10 seconds'),
        ('no output at all', 'ulive: guest up\nULIVE-EXIT rc=1\n', 1, 'no KTAP/TAP version line'),
    ]
    failures = 0
    for name, text, want_rc, want_text in cases:
        rc, out = judge(kunit, text)
        ok = rc == want_rc and want_text in out
        print(f'{"ok" if ok else "not ok"}: {name}')
        if not ok:
            failures += 1
            print(f'    exit {rc} (wanted {want_rc}), wanted {want_text!r} in:\n' + out)
    print(f'ktap-judge: {len(cases) - failures} of {len(cases)} cases as expected')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
