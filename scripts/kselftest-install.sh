#!/usr/bin/env bash
# make kselftest-install INSTALL_PATH=DIR: install the guest suites as a kselftest
# collection, laid out as `make -C tools/testing/selftests install` lays out an in-tree
# target:
#   DIR/run_kselftest.sh, DIR/kselftest/*   the runner, from the kernel tree in use
#   DIR/kselftest-list.txt                  udmabuf-live:SUITE, drivers/dma-buf:udmabuf
#   DIR/udmabuf-live/SUITE                  one entry point per suite (ulive-selftests --suite SUITE)
#   DIR/udmabuf-live/ulive-selftests        the suites (static)
#   DIR/udmabuf-live/udmabuf-ctl            the CLI the cli suite runs (static)
#   DIR/udmabuf-live/modules/*.ko           udmabuf_live.ko and the test importer ulive_importer.ko
#   DIR/udmabuf-live/settings, config       the per-test timeout, our kernel config fragment
#   DIR/drivers/dma-buf/udmabuf, config     the kernel's own udmabuf kselftest (static)
# Environment: KBUILD_DIR (kernel build tree), MODULE_OUT (module objects, from make).
. "$(dirname "$0")/common.sh"

DEST=${1:-}
[ -n "$DEST" ] || die "usage: make kselftest-install INSTALL_PATH=DIR"
KB=${KBUILD_DIR:?KBUILD_DIR not set (run through make)}
KSRC=$KB; [ -e "$KB/source" ] && KSRC=$(readlink -f "$KB/source")
SELFTESTS=$KSRC/tools/testing/selftests
MODS=${MODULE_OUT:?MODULE_OUT not set (run through make)}
BIN=$GUEST_BIN_DIR
# The per-test timeout (s). The slowest suites under QEMU TCG on a contended 2-core
# machine (2026-12-02): live-safety 40-65 s, upstream-kselftest 31-50 s, live-stress
# 21-49 s, on the default and the debug kernel alike. 900 s leaves room for slower
# machines; `run_kselftest.sh -o SECS` overrides it.
TIMEOUT=${KSFT_TIMEOUT:-900}

[ -f "$SELFTESTS/run_kselftest.sh" ] && [ -f "$SELFTESTS/kselftest/runner.sh" ] \
    || die "no kselftest runner in $SELFTESTS (KBUILD_DIR's kernel source)"
for b in ulive-selftests udmabuf-ctl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run 'make guest-bins'"
done
kos=$(ls "$MODS"/kmod/*.ko "$MODS"/importer/*.ko 2>/dev/null) || die "no modules in $MODS: run 'make module importer'"

mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

# The kernel's upstream udmabuf kselftest, built static from the same tree (the test
# guest has no libc); headers from the build tree, else installed once into out/.
build_upstream_kselftest() {
    local hdr=$KB/usr/include out=$OUT/udmabuf-kselftest
    if [ ! -f "$hdr/linux/udmabuf.h" ]; then
        hdr=$OUT/kheaders/include
        [ -f "$hdr/linux/udmabuf.h" ] || make -s -C "$KB" headers_install INSTALL_HDR_PATH="$OUT/kheaders" >/dev/null
    fi
    local src=$SELFTESTS/drivers/dma-buf/udmabuf.c
    [ -f "$src" ] || die "upstream kselftest not found at $src"
    mkdir -p "$OUT"
    if [ ! -f "$out" ] || [ "$src" -nt "$out" ]; then
        # Atomically: boots that run side by side (make test) may install at once.
        gcc -static -O2 -I "$hdr" -I "$SELFTESTS" -o "$out.$$" "$src" || die "could not build the upstream kselftest $src"
        mv -f "$out.$$" "$out"
    fi
}
build_upstream_kselftest

# The runner, exactly as the kernel's selftests Makefile installs it.
install -d "$DEST/kselftest"
for f in module.sh runner.sh prefix.pl ktap_helpers.sh ksft.py; do
    [ -f "$SELFTESTS/kselftest/$f" ] && install -m 744 "$SELFTESTS/kselftest/$f" "$DEST/kselftest/"
done
install -m 744 "$SELFTESTS/run_kselftest.sh" "$DEST/"

C=$DEST/udmabuf-live
rm -rf "$C"
install -d "$C/modules"
install -m 755 "$BIN/ulive-selftests" "$BIN/udmabuf-ctl" "$C/"
for k in $kos; do install -m 644 "$k" "$C/modules/"; done
install -m 644 "$ROOT/selftests/config" "$C/config"
{
    echo "# udmabuf-live: the longest a suite may take (s); run_kselftest.sh -o SECS overrides it"
    echo "timeout=$TIMEOUT"
} > "$C/settings"

suites=$("$BIN/ulive-selftests" --list) || die "ulive-selftests --list failed"
list=
for s in $suites; do
    cat > "$C/$s" <<ENTRY
#!/bin/sh
# udmabuf-live kselftest: the '$s' suite. KTAP on stdout; exit 0 pass, 1 fail, 4 skip.
# The modules are found in \$ULIVE_MODULE_DIR, else in modules/ next to this file.
dir=\$(cd "\$(dirname "\$0")" && pwd)
export PATH="\$dir:\$PATH"
exec "\$dir/ulive-selftests" --suite $s "\$@"
ENTRY
    chmod 755 "$C/$s"
    list+="udmabuf-live:$s"$'\n'
done

install -d "$DEST/drivers/dma-buf"
install -m 755 "$OUT/udmabuf-kselftest" "$DEST/drivers/dma-buf/udmabuf"
install -m 644 "$SELFTESTS/drivers/dma-buf/config" "$DEST/drivers/dma-buf/config"
list+="drivers/dma-buf:udmabuf"$'\n'

printf '%s' "$list" > "$DEST/kselftest-list.txt"
(cd "$ROOT" && git describe --always --dirty 2>/dev/null) > "$DEST/VERSION" || rm -f "$DEST/VERSION"
log "kselftest collection installed in $DEST ($(echo $suites | wc -w) udmabuf-live tests; ./run_kselftest.sh -c udmabuf-live)"
