#!/usr/bin/env bash
# Boot the test kernel in QEMU with an initramfs holding busybox, udmabuf-ctl, the modules
# and the installed kselftest collection (scripts/kselftest-install.sh), and judge the run
# (test mode: the kernel's KTAP parser, through scripts/ktap-judge.py).
#   scripts/vm.sh test|run|bench|shell   (shell: an interactive guest with the module loaded)
# Environment: KBUILD_DIR (kernel build tree), VM_TIMEOUT (s), ULIVE_INJECT=fail|ktap|timeout|panic|hang|warn,
#   ULIVE_TEST_DEVICE=/dev/udmabuf (run the semantics suites against that device instead)
#   BENCH_ITERATIONS (bench mode: iterations per measurement)
#   BENCH_KMOD_ARGS (bench mode: udmabuf_live parameters, e.g. account_memlock=0)
#   BENCH_CPUS=WQ:SELF (bench mode: hex CPU masks for the unbound workqueues and the bench process)
#   BENCH_PROFILE=N (bench mode: after the timed cells, profile the missed cells' paths, N operations each)
#   ULIVE_BENCH_BOOT=N (bench mode: the logs are out/bench-boot-N-*.log, one per boot of `make bench`)
#   ULIVE_SUITES="a b" (test mode: run only these suites, e.g. "module stress")
#   any other ULIVE_NAME=VALUE: a suite knob (README: ULIVE_STRESS_SECS, ULIVE_FUZZ_SEED, ...), passed
#   to the guest's test runner as ulive.env.NAME=VALUE
# Exit status is non-zero on: a failed test, KTAP the kernel's parser rejects or a short plan, a kernel
# BUG/WARNING/Oops/lockdep/KASAN report, a panic, or a timeout.
. "$(dirname "$0")/common.sh"

MODE=${1:?usage: vm.sh test|run|bench|shell}
KB=${KBUILD_DIR:?KBUILD_DIR not set}
KSRC=$KB; [ -e "$KB/source" ] && KSRC=$(readlink -f "$KB/source")
INJECT=${ULIVE_INJECT:-}
case $MODE in test) TMO=${VM_TIMEOUT:-1500} ;; shell) TMO=${VM_TIMEOUT:-86400} ;; *) TMO=${VM_TIMEOUT:-1800} ;; esac
TAG=$MODE${INJECT:+-inject-$INJECT}${ULIVE_BENCH_BOOT:+-boot-$ULIVE_BENCH_BOOT}
mkdir -p "$OUT"
CONSOLE_LOG=$OUT/$TAG-console.log    # everything the guest console printed
KTAP_LOG=$OUT/$TAG-ktap.log          # a clean copy of the guest's userspace output (ttyS1)
WORK=$OUT/$TAG                       # this boot's kselftest collection and initramfs: boots
rm -rf "$WORK"; mkdir -p "$WORK"     # with other tags may run at the same time (make test)
TARGET_DIR=$GUEST_BIN_DIR

# The kselftest collection the guest runs, installed exactly as a user installs it.
install_kselftests() {
    KSFT_DIR=$WORK/kselftest
    rm -rf "$KSFT_DIR"
    KBUILD_DIR=$KB "$ROOT/scripts/kselftest-install.sh" "$KSFT_DIR" 2>&1 | sed 's/^/    /' >&2
    [ -x "$KSFT_DIR/run_kselftest.sh" ] || die "kselftest-install failed"
}

build_initramfs() {
    local list=$WORK/initramfs.list gen=$KB/usr/gen_init_cpio
    [ -x "$gen" ] || die "$gen missing: the kernel tree must be built with CONFIG_BLK_DEV_INITRD"
    local mods=${MODULE_OUT:?MODULE_OUT not set (run through make)}
    local ko; ko=$(ls "$mods"/kmod/*.ko 2>/dev/null) || die "no module in $mods/kmod: run 'make module'"
    # The test importer (selftests/importer/, 'make importer').
    ko="$ko $(ls "$mods"/importer/*.ko 2>/dev/null || true)"
    {
        echo "dir /dev 0755 0 0"
        echo "nod /dev/console 0600 0 0 c 5 1"
        for d in /bin /sbin /usr /usr/bin /proc /sys /tmp /root /lib /lib/modules /selftests /kselftest /debian /shots; do echo "dir $d 0755 0 0"; done
        echo "file /bin/busybox $(command -v busybox 2>/dev/null || echo /bin/busybox) 0755 0 0"
        echo "file /init $ROOT/selftests/guest/init 0755 0 0"
        # The kselftest runner enforces its timeouts only through /usr/bin/timeout.
        echo "file /usr/bin/timeout $ROOT/selftests/guest/timeout 0755 0 0"
        echo "file /bin/udmabuf-ctl $TARGET_DIR/udmabuf-ctl 0755 0 0"
        # `make run` and `make shell` load the module from /lib/modules.
        for k in $ko; do echo "file /lib/modules/$(basename "$k") $k 0644 0 0"; done
        for f in "$ROOT"/selftests/guest/*.sh; do [ -f "$f" ] && echo "file /selftests/$(basename "$f") $f 0755 0 0"; done
        # The installed kselftest collection, at /kselftest.
        (cd "$KSFT_DIR" && find . -mindepth 1 | sort) | while read -r p; do
            if [ -d "$KSFT_DIR/$p" ]; then echo "dir /kselftest/${p#./} 0755 0 0"
            else echo "file /kselftest/${p#./} $KSFT_DIR/${p#./} $(stat -c %a "$KSFT_DIR/$p") 0 0"; fi
        done
    } > "$list"
    "$gen" "$list" > "$WORK/initramfs.cpio"
}

# KVM only if a quick probe shows that a guest really boots with it (cached per machine).
pick_accel() {
    local cache=$CACHE/kvm-probe
    if [ -n "${VM_ACCEL:-}" ]; then echo "$VM_ACCEL"; return; fi
    if [ ! -f "$cache" ]; then
        local r=tcg
        if [ -w /dev/kvm ] && timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 512M -nodefaults \
                -display none -no-reboot -serial stdio -kernel "$KB/arch/x86/boot/bzImage" \
                -initrd "$WORK/initramfs.cpio" -append "console=ttyS0 ulive.mode=probe" </dev/null 2>/dev/null \
                | grep -q ULIVE-PROBE-OK; then r=kvm; fi
        mkdir -p "$CACHE"; echo "$r" > "$cache"
    fi
    cat "$cache"
}

# Judge the run from the logs. Prints every reason it fails.
judge() {
    local qemu_rc=$1 bad=0
    tr -d '\r' < "$CONSOLE_LOG" > "$CONSOLE_LOG.tmp" && mv "$CONSOLE_LOG.tmp" "$CONSOLE_LOG"
    [ -f "$KTAP_LOG" ] && { tr -d '\r' < "$KTAP_LOG" > "$KTAP_LOG.tmp" && mv "$KTAP_LOG.tmp" "$KTAP_LOG"; }
    if [ "$qemu_rc" = 124 ]; then echo "FAIL: guest timed out after ${TMO}s (hung?)"; bad=1; fi
    local reports
    # (grep finds nothing on a clean run: `|| true`, or errexit+pipefail end the script silently)
    reports=$( { grep -aE "$KERNEL_REPORTS" "$CONSOLE_LOG" || true; } | head -n 20)
    if [ -n "$reports" ]; then echo "FAIL: kernel reports in the console log:"; echo "$reports" | sed 's/^/    /'; bad=1; fi
    local exit_line; exit_line=$( { grep -a '^ULIVE-EXIT rc=' "$KTAP_LOG" 2>/dev/null || true; } | tail -n1)
    if [ -z "$exit_line" ]; then echo "FAIL: the guest never reported its exit (panic, crash or hang)"; return 1; fi
    local rc=${exit_line#ULIVE-EXIT rc=}
    if [ "$MODE" = test ]; then
        # The kernel's own KTAP parser reads the runner's document and each program's
        # (scripts/ktap-judge.py): a parser error, a short plan, a failed test fail the run.
        local verdict
        verdict=$(python3 "$ROOT/scripts/ktap-judge.py" --kunit "$KSRC/tools/testing/kunit" \
            --parsed "$OUT/$TAG-ktap-parsed.log" --label vm-test "$KTAP_LOG") || bad=1
        echo "$verdict"
        case $rc in 0) ;; *) echo "FAIL: run_kselftest.sh exited $rc"; bad=1 ;; esac
        [ $bad = 0 ] && echo "PASS: every test program ok under run_kselftest.sh, KTAP accepted by the kernel's parser, no kernel reports"
    else
        [ "$rc" = 0 ] || { echo "FAIL: guest '$MODE' exited $rc"; bad=1; }
    fi
    return $bad
}

install_kselftests
build_initramfs
ACCEL=$(pick_accel)
# The guest CPU under TCG: a baseline x86-64 with SMEP and SMAP (so user-access guards
# stay exercised). `max` made the guests' memory-heavy work slower: the upstream kselftest
# took 24 s with it and 10 s with this (VM_CPU=max ULIVE_SUITES="module upstream-kselftest"
# make vm-test against VM_CPU=qemu64,+smap,+smep). The bench keeps `max`, the CPU its
# recorded figures were measured on.
DEFAULT_CPU=qemu64,+smap,+smep; [ "$MODE" = bench ] && DEFAULT_CPU=max
CPU=${VM_CPU:-$DEFAULT_CPU}; [ "$ACCEL" = kvm ] && CPU=host
# pci=noacpi: PCI interrupts are routed by the BIOS's PIR table, not by running the ACPI
# _PRT method, which the debug kernel's AML interpreter (KASAN, lockdep) under TCG cannot
# finish within ACPICA's 30 s loop timeout: virtio-pci then gets no interrupt and the 9p
# mount of the Debian rootfs hangs. ACPI itself stays (the second CPU comes from it).
APPEND="console=ttyS0 panic=-1 pci=noacpi hugepages=${VM_HUGEPAGES:-1100} ulive.mode=$MODE${INJECT:+ ulive.inject=$INJECT}${BENCH_ITERATIONS:+ ulive.iters=$BENCH_ITERATIONS}${BENCH_KMOD_ARGS:+ ulive.kmod_args=$(echo $BENCH_KMOD_ARGS | tr ' ' ,)}${BENCH_CPUS:+ ulive.bench_cpus=$BENCH_CPUS}${BENCH_PROFILE:+ ulive.profile=$BENCH_PROFILE}"
# Bench under TCG: the test kernel finds no HPET/PIT reference and would time with
# refined-jiffies (4 ms steps). TCG's guest TSC runs at the host TSC rate, so hand the
# guest the host's TSC frequency and let it use the TSC.
if [ "$MODE" = bench ] && [ "$ACCEL" = tcg ]; then
    khz=$(cat /sys/devices/system/cpu/cpu0/tsc_freq_khz 2>/dev/null \
        || awk -F: '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo)
    [ -n "$khz" ] && APPEND="$APPEND tsc_early_khz=$khz tsc=reliable"
fi
APPEND+="${ULIVE_TEST_DEVICE:+ ulive.testdev=$ULIVE_TEST_DEVICE}"
if [ -n "${ULIVE_SUITES:-}" ]; then APPEND+=" ulive.suites=$(echo $ULIVE_SUITES | tr ' ' ,)"; fi
# Every other ULIVE_* variable is a knob of the guest suites: it reaches the test runner's
# environment as ulive.env.NAME=VALUE (selftests/guest/init exports it).
for v in $(compgen -e ULIVE_); do
    case $v in ULIVE_INJECT|ULIVE_SUITES|ULIVE_TEST_DEVICE|ULIVE_BENCH_BOOT) continue ;; esac
    [ -n "${!v}" ] || continue
    case ${!v} in *[[:space:]]*) die "$v='${!v}': a suite knob reaches the guest on the kernel command line, which cannot carry spaces (use commas)" ;; esac
    APPEND+=" ulive.env.$v=${!v}"
done
# The Debian rootfs (scripts/rootfs.sh) for the wayland suite and `make run`, read-only over
# 9p (mounted at /debian in the guest), and out/wayland/ for the screenshots the guest takes.
ROOTFS_DIR=${ROOTFS_DIR:-$CACHE/rootfs/trixie}
SHARES=()
# Not for the harness self-test's injected boots: they run no compositor, and must not
# replace the screenshots of the real run.
if [ -z "$INJECT" ] && [ -x "$ROOTFS_DIR/usr/bin/weston" ]; then
    SHOTS=$OUT/wayland; rm -rf "$SHOTS"; mkdir -p "$SHOTS"
    SHARES=(-virtfs "local,path=$ROOTFS_DIR,mount_tag=debian,security_model=none,readonly=on"
            -virtfs "local,path=$SHOTS,mount_tag=shots,security_model=none")
    log "Debian rootfs $ROOTFS_DIR shared at /debian; screenshots go to $SHOTS"
else
    log "no Debian rootfs at $ROOTFS_DIR (make rootfs): the wayland suite will skip"
fi
log "booting ($ACCEL, ${VM_MEM:-4G}, timeout ${TMO}s): $APPEND"
log "console log: $CONSOLE_LOG"
rm -f "$KTAP_LOG"
# The shell mode gives the guest console our terminal (Ctrl-A X quits QEMU); every other
# mode runs unattended.
SERIAL=stdio QEMU_STDIN=/dev/null
if [ "$MODE" = shell ]; then
    SERIAL=mon:stdio QEMU_STDIN=/dev/stdin
    log "interactive guest: the module is loaded; 'exit' (or Ctrl-A X) ends it"
fi
set +e
timeout --foreground -k 5 "$TMO" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU" -smp 2 -m "${VM_MEM:-4G}" \
    -nodefaults -display none -no-reboot \
    -serial "$SERIAL" -serial "file:$KTAP_LOG" \
    "${SHARES[@]}" \
    -kernel "$KB/arch/x86/boot/bzImage" -initrd "$WORK/initramfs.cpio" -append "$APPEND" \
    <"$QEMU_STDIN" 2>&1 | tee "$CONSOLE_LOG"
qemu_rc=${PIPESTATUS[0]}
set -e
judge_rc=0; judge "$qemu_rc" || judge_rc=$?
if [ -n "${SHOTS:-}" ] && ls "$SHOTS"/*.png >/dev/null 2>&1; then
    log "compositor screenshots: $SHOTS ($(cd "$SHOTS" && ls *.png | tr '\n' ' '))"
fi
exit $judge_rc
