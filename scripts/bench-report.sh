#!/usr/bin/env bash
# After the guest boots of `make bench` (scripts/vm.sh bench, ULIVE_BENCH_BOOT=1..N): take
# the JSON that `udmabuf-ctl bench` printed in each boot (between ULIVE-BENCH-JSON
# markers in out/bench-boot-N-ktap.log), keep it as out/bench-boot-N.json, and let
# ulive-bench-report take each cell's median over the boots with its spread, print every
# cell (a missed target as MISSED), rewrite the generated part of BENCHMARKS.md and draw
# BENCHMARKS.svg. The cells and their targets come from the guest's report
# (cli/src/commands/bench_cells.rs), nowhere else.
. "$(dirname "$0")/common.sh"

DEST=${BENCH_REPORT:-$ROOT/BENCHMARKS.md}
CHART=${BENCH_CHART:-$(dirname "$DEST")/BENCHMARKS.svg}
jsons=()
for log in "$OUT"/bench-boot-*-ktap.log; do
    [ -f "$log" ] || continue
    json=${log%-ktap.log}.json
    sed -n '/^ULIVE-BENCH-JSON-BEGIN$/,/^ULIVE-BENCH-JSON-END$/p' "$log" | sed '1d;$d' > "$json"
    [ -s "$json" ] || die "no benchmark JSON in $log (did the guest run fail?)"
    jsons+=("$json")
done
((${#jsons[@]})) || die "no $OUT/bench-boot-N-ktap.log: run 'make bench' first"

# The function profile of boot 1 (`udmabuf-ctl bench --profile`), when it has one.
profile=()
if [ -f "$OUT/bench-boot-1-ktap.log" ]; then
    sed -n '/^ULIVE-BENCH-PROFILE-BEGIN$/,/^ULIVE-BENCH-PROFILE-END$/p' "$OUT/bench-boot-1-ktap.log" | sed '1d;$d' > "$OUT/bench-profile.md"
    [ -s "$OUT/bench-profile.md" ] && profile=(--profile "$OUT/bench-profile.md")
fi

accel=$(cat "$CACHE/kvm-probe" 2>/dev/null || echo tcg)
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
flavor=${KERNEL_FLAVOR:-default}
cmd="make bench"; [ "$flavor" = bench ] || cmd="make bench BENCH_FLAVOR=$flavor"
[ "${BENCH_ITERATIONS:-}" ] && cmd="$cmd BENCH_ITERATIONS=$BENCH_ITERATIONS"
"$ROOT/target/release/ulive-bench-report" --md "$DEST" --svg "$CHART" \
    --about "command: \`$cmd\` ($(date -u -r "${jsons[0]}" '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))" \
    --about "kernel flavour \`$flavor\` (tinyconfig + selftests/config$([ "$flavor" = default ] || echo " + selftests/config.$flavor"))" \
    --about "host: $(nproc) CPUs ($cpu_model), $(free -g | awk '/^Mem:/ { print $2 }') GiB, shared with other work; guest: QEMU $accel" \
    --about "raw figures: out/bench-boot-N.json (one per boot)" \
    "${profile[@]}" "${jsons[@]}"
