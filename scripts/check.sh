#!/usr/bin/env bash
# make check: formatters and linters, before anything boots (run by `make test`).
#  1. rustfmt with the kernel's own .rustfmt.toml on both kernel modules (kmod/ and the
#     test importer, selftests/importer/), with the kernel toolchain's rustfmt;
#  2. the kernel's clippy (Kbuild CLIPPY=1, the kernel toolchain's clippy-driver) on both,
#     warnings as errors; objects go to out/check/ so the real build is not disturbed.
# Fix what they report; do not allow lints wholesale.
. "$(dirname "$0")/common.sh"

KB=${KBUILD_DIR:?KBUILD_DIR (the kernel build tree) must be set}
mkdir -p "$OUT"
RUSTFMT=/usr/bin/rustfmt
CLIPPY_DRIVER=/usr/bin/clippy-driver
[ -x "$RUSTFMT" ] || die "no $RUSTFMT: run 'make deps' (package rustfmt-web)"
[ -x "$CLIPPY_DRIVER" ] || die "no $CLIPPY_DRIVER: run 'make deps' (package rust-web-clippy)"
fail=0

# Warm runs: nothing changed since the last clean check (the sources of both modules,
# this script, the kernel build and the tools): say so and stop.
stamp=$OUT/check.stamp
key=$( { find "$ROOT/kmod" "$ROOT/selftests/importer" "$ROOT/uapi/src" -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kbuild \) -print0 \
           | sort -z | xargs -0 sha256sum; sha256sum "$0"; cat "$KB/.udmabuf-live-key" 2>/dev/null || echo "$KB";
         "$RUSTFMT" --version; "$CLIPPY_DRIVER" --version; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
    log "check: nothing changed since the last clean run ($stamp)"
    exit 0
fi
rm -f "$stamp"

roots=("$ROOT/kmod/udmabuf_live_main.rs" "$ROOT/selftests/importer/ulive_importer_main.rs")
if ! "$RUSTFMT" --check --config-path "$SRC_DIR/.rustfmt.toml" --edition 2021 "${roots[@]}" > "$OUT/check-rustfmt.log" 2>&1; then
    echo "rustfmt (kernel .rustfmt.toml): these files are not formatted:" >&2
    grep '^Diff in' "$OUT/check-rustfmt.log" | sed 's/^Diff in \(.*\):[0-9]*:$/  \1/' | sort -u >&2
    echo "  fix: $RUSTFMT --config-path $SRC_DIR/.rustfmt.toml --edition 2021 ${roots[*]#$ROOT/}" >&2
    fail=1
else
    log "rustfmt (kernel config): kmod/ and selftests/importer/ formatted"
fi

for m in kmod selftests/importer; do
    mo=$OUT/check/$m
    mkdir -p "$mo"
    # Touch nothing in the tree: a fresh object directory makes Kbuild compile everything.
    if ! make -s -C "$KB" M="$ROOT/$m" MO="$mo" $(kbuild_args) CLIPPY=1 CLIPPY_DRIVER="$CLIPPY_DRIVER" \
            KCFLAGS= modules > "$OUT/check-clippy.log" 2>&1 || grep -q '^warning' "$OUT/check-clippy.log"; then
        echo "kernel clippy on $m:" >&2
        grep -E '^(warning|error)|^ *--> ' "$OUT/check-clippy.log" | grep -v 'warnings emitted' | head -40 >&2
        fail=1
    else
        log "kernel clippy (CLIPPY=1): $m clean"
    fi
    rm -rf "$mo"
done
[ $fail = 0 ] && echo "$key" > "$stamp"
exit $fail
