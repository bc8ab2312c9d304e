#!/bin/sh
# `make bench`, inside the guest: udmabuf-live against the built-in udmabuf, measured by
# `udmabuf-ctl bench` through the test importer. The host (scripts/bench-report.sh) takes
# the table and the JSON from between the markers. Iterations: ulive.iters=N on the
# kernel command line (BENCH_ITERATIONS on the host). Exit code -> /tmp/ulive-bench.rc.
set -e
trap 'echo $? > /tmp/ulive-bench.rc' EXIT
iters=200
kargs=
for arg in $(cat /proc/cmdline); do
    case $arg in
        ulive.iters=*) iters=${arg#ulive.iters=} ;;
        ulive.kmod_args=*) kargs=$(echo "${arg#ulive.kmod_args=}" | tr , ' ') ;;
        ulive.bench_cpus=*) cpus=${arg#ulive.bench_cpus=} ;;
        ulive.profile=*) profile=${arg#ulive.profile=} ;;
    esac
done
# shellcheck disable=SC2086 # one word per parameter
insmod /lib/modules/udmabuf_live.ko $kargs
insmod /lib/modules/ulive_importer.ko
echo "== udmabuf-ctl bench --iterations $iters (clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource))"
# ulive.bench_cpus=WQ:SELF (BENCH_CPUS on the host, an experiment on where the worker
# runs): CPU masks (hex) for the unbound workqueues (our worker's) and for the bench.
run=
if [ -n "${cpus:-}" ]; then
    echo "${cpus%%:*}" > /sys/devices/virtual/workqueue/cpumask
    run="taskset ${cpus#*:}"
    echo "== unbound workqueues on CPU mask $(cat /sys/devices/virtual/workqueue/cpumask), bench on ${cpus#*:}"
fi
$run udmabuf-ctl bench --iterations "$iters" --json-out /tmp/bench.json > /tmp/bench.txt
echo ULIVE-BENCH-TABLE-BEGIN
cat /tmp/bench.txt
echo ULIVE-BENCH-TABLE-END
echo ULIVE-BENCH-JSON-BEGIN
cat /tmp/bench.json
echo ULIVE-BENCH-JSON-END
# ulive.profile=N (BENCH_PROFILE on the host, the first boot of `make bench`): after the
# timed cells, so that tracing cannot touch them.
if [ -n "${profile:-}" ]; then
    [ -e /sys/kernel/tracing/trace_stat ] || mount -t tracefs tracefs /sys/kernel/tracing
    echo "== udmabuf-ctl bench --profile --iterations $profile"
    # A kernel without the profiler (BENCH_FLAVOR=default, a KDIR) leaves the timed cells be.
    if $run udmabuf-ctl bench --profile --iterations "$profile" > /tmp/profile.md; then
        echo ULIVE-BENCH-PROFILE-BEGIN
        cat /tmp/profile.md
        echo ULIVE-BENCH-PROFILE-END
    else
        echo "== no profile (the error above)"
    fi
fi
rmmod ulive_importer
rmmod udmabuf_live
echo "== done"
