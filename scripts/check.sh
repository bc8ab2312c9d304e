#!/usr/bin/env bash
# make check: formatters and linters, before anything boots (run by `make test`).
#  1. rustfmt with the kernel's own .rustfmt.toml on both kernel modules (kmod/ and the
#     test importer, selftests/importer/), with the kernel toolchain's rustfmt;
#  2. the kernel's clippy (Kbuild CLIPPY=1, the kernel toolchain's clippy-driver) on both,
#     warnings as errors; objects go to out/check/ so the real build is not disturbed;
#  3. `cargo fmt --check` and `cargo clippy -D warnings` (the machine's cargo) on the
#     userspace workspace (uapi, cli, selftests, the importer's ABI crate, bench-report).
# Fix what they report; do not allow lints wholesale.
. "$(dirname "$0")/common.sh"

KB=${KBUILD_DIR:?KBUILD_DIR (the kernel build tree) must be set}
mkdir -p "$OUT"
RUSTFMT=/usr/bin/rustfmt
CLIPPY_DRIVER=/usr/bin/clippy-driver
[ -x "$RUSTFMT" ] || die "no $RUSTFMT: run 'make deps' (package rustfmt-web)"
[ -x "$CLIPPY_DRIVER" ] || die "no $CLIPPY_DRIVER: run 'make deps' (package rust-web-clippy)"
command -v cargo > /dev/null || die "no cargo on PATH: the workspace checks use the machine's cargo"
cargo clippy --version > /dev/null 2>&1 || die "no cargo clippy: install clippy for the machine's cargo (rustup component add clippy)"
fail=0

# Warm runs: nothing changed since the last clean check (the sources of both modules and
# of the workspace, Cargo.lock, this script, the kernel build and the tools): say so and
# stop.
stamp=$OUT/check.stamp
key=$( { find "$ROOT/kmod" "$ROOT/selftests" "$ROOT/uapi" "$ROOT/cli" "$ROOT/bench-report" -type f \
             \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Cargo.toml -o -name rustfmt.toml \) -print0 \
           | sort -z | xargs -0 sha256sum; sha256sum "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$0";
         cat "$KB/.udmabuf-live-key" 2>/dev/null || echo "$KB";
         "$RUSTFMT" --version; "$CLIPPY_DRIVER" --version; cargo --version; cargo fmt --version; cargo clippy --version; } \
       | sha256sum | cut -d' ' -f1)
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

# The userspace workspace, with the machine's cargo (its own rustfmt.toml files: cli/ has
# one).
if ! (cd "$ROOT" && cargo fmt --all --check) > "$OUT/check-cargo-fmt.log" 2>&1; then
    echo "cargo fmt: the workspace is not formatted:" >&2
    grep '^Diff in' "$OUT/check-cargo-fmt.log" | sed 's/^Diff in \(.*\):[0-9]*:$/  \1/' | sort -u >&2
    echo "  fix: cargo fmt --all" >&2
    fail=1
else
    log "cargo fmt: the workspace is formatted"
fi
if ! (cd "$ROOT" && cargo clippy --quiet --workspace --all-targets -- -D warnings) > "$OUT/check-cargo-clippy.log" 2>&1; then
    echo "cargo clippy -D warnings on the workspace:" >&2
    grep -E '^(warning|error)|^ *--> ' "$OUT/check-cargo-clippy.log" | grep -v 'warnings emitted' | head -40 >&2
    fail=1
else
    log "cargo clippy -D warnings: the workspace is clean"
fi
[ $fail = 0 ] && echo "$key" > "$stamp"
exit $fail
