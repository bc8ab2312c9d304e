#!/usr/bin/env bash
# make check: formatters and linters, before anything boots (run by `make test`).
#  1. rustfmt with the kernel's own .rustfmt.toml on both kernel modules (kmod/ and the
#     test importer, selftests/importer/), with the kernel toolchain's rustfmt;
#  2. the kernel's clippy (Kbuild CLIPPY=1, the kernel toolchain's clippy-driver) on both,
#     warnings as errors; objects go to out/check/ so the real build is not disturbed;
#  3. `cargo fmt --check` and `cargo clippy -D warnings` (the machine's cargo) on the
#     userspace workspace (uapi, cli, selftests, the importer's ABI crate, bench-report).
# Fix what they report; do not allow lints wholesale.
# `scripts/check.sh kernel` runs 1 and 2, which need the kernel build; `scripts/check.sh
# workspace` runs 3, which does not (make test runs it beside the kernel build); no
# argument runs both.
. "$(dirname "$0")/common.sh"

PART=${1:-all}
case $PART in kernel|workspace|all) ;; *) die "usage: scripts/check.sh [kernel|workspace]" ;; esac
mkdir -p "$OUT"
RUSTFMT=/usr/bin/rustfmt
CLIPPY_DRIVER=/usr/bin/clippy-driver
KB=$KBUILD_DIR

# Warm runs: nothing changed since the last clean check of part $1 (the key of its
# sources and tools comes on stdin; this script is part of it): say so and return 0.
STAMP_KEY=
unchanged() {
    local stamp=$OUT/check-$1.stamp
    STAMP_KEY=$( { cat; sha256sum "$0"; } | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" = "$STAMP_KEY" ]; then
        log "check ($1): nothing changed since the last clean run ($stamp)"
        return 0
    fi
    rm -f "$stamp"
    return 1
}
sources() {
    find "$@" -type f \( -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name Kbuild \
        -o -name Cargo.toml -o -name rustfmt.toml \) -print0 | sort -z | xargs -0 sha256sum
}

check_kernel() {
    [ -x "$RUSTFMT" ] || die "no $RUSTFMT: run 'make deps' (package rustfmt-web)"
    [ -x "$CLIPPY_DRIVER" ] || die "no $CLIPPY_DRIVER: run 'make deps' (package rust-web-clippy)"
    if unchanged kernel < <(sources "$ROOT/kmod" "$ROOT/selftests/importer" "$ROOT/uapi/src"
            cat "$KB/.udmabuf-live-key" 2>/dev/null || echo "$KB"
            "$RUSTFMT" --version; "$CLIPPY_DRIVER" --version); then
        return 0
    fi
    local fail=0 m mo
    local roots=("$ROOT/kmod/udmabuf_live_main.rs" "$ROOT/selftests/importer/ulive_importer_main.rs")
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
    [ $fail = 0 ] && echo "$STAMP_KEY" > "$OUT/check-kernel.stamp"
    return $fail
}

# The userspace workspace, with the machine's cargo (its own rustfmt.toml files: cli/ has
# one).
check_workspace() {
    command -v cargo > /dev/null || die "no cargo on PATH: the workspace checks use the machine's cargo"
    cargo clippy --version > /dev/null 2>&1 || die "no cargo clippy: install clippy for the machine's cargo (rustup component add clippy)"
    if unchanged workspace < <(sources "$ROOT/kmod" "$ROOT/selftests" "$ROOT/uapi" "$ROOT/cli" "$ROOT/bench-report"
            sha256sum "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"
            cargo --version; cargo fmt --version; cargo clippy --version); then
        return 0
    fi
    local fail=0
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
    [ $fail = 0 ] && echo "$STAMP_KEY" > "$OUT/check-workspace.stamp"
    return $fail
}

fail=0
if [ "$PART" != workspace ]; then check_kernel || fail=1; fi
if [ "$PART" != kernel ]; then check_workspace || fail=1; fi
exit $fail
