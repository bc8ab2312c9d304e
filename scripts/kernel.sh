#!/usr/bin/env bash
# make kernel: build the reference test kernel (tinyconfig + selftests/config) out of
# tree in $CACHE/build/$KERNEL_FLAVOR. A key over everything that shapes the build is
# stored next to it, so an unchanged rebuild (even from a fresh clone) takes seconds.
# With KDIR set, the user's own build tree is used and nothing is built here.
. "$(dirname "$0")/common.sh"

if [ -n "${KDIR:-}" ]; then
    [ -f "$KDIR/Module.symvers" ] || die "KDIR=$KDIR has no Module.symvers: point it at a built kernel tree"
    grep -q '^CONFIG_RUST=y' "$KDIR/.config" || die "KDIR=$KDIR is not built with CONFIG_RUST=y"
    log "using KDIR=$KDIR"; exit 0
fi

FLAVOR=${KERNEL_FLAVOR:-default}
# One build of a flavour at a time: clones and worktrees share the cache, and two builds
# in one tree corrupt it. A second caller waits here, then finds the build up to date.
mkdir -p "$CACHE/build"
exec 9> "$CACHE/build/.lock-$FLAVOR"
flock -n 9 || { log "another build of the $FLAVOR kernel is running: waiting for it"; flock 9; }
FRAGMENTS=("$ROOT/selftests/config")
[ "$FLAVOR" = default ] || FRAGMENTS+=("$ROOT/selftests/config.$FLAVOR")
for f in "${FRAGMENTS[@]}"; do [ -f "$f" ] || die "no config fragment $f for KERNEL_FLAVOR=$FLAVOR"; done
BUILD=$CACHE/build/$FLAVOR
[ -f "$SRC_DIR/Makefile" ] || die "no kernel source in $SRC_DIR: run 'make deps' first"
[ -x "$TOOLS/bin/bindgen" ] || die "no bindgen in $TOOLS: run 'make deps' first"

key=$( { cat "${FRAGMENTS[@]}" "$SRC_DIR/.udmabuf-live-source" 2>/dev/null || true
         readlink -f "$SRC_DIR"; clang$LLVM_SUFFIX --version | head -n1
         $KRUSTC --version; "$TOOLS/bin/bindgen" --version; echo v1; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$BUILD/.udmabuf-live-key" 2>/dev/null)" = "$key" ] && [ -f "$BUILD/arch/x86/boot/bzImage" ]; then
    log "kernel ($FLAVOR) up to date: $BUILD"; exit 0
fi

mkdir -p "$BUILD"; rm -f "$BUILD/.udmabuf-live-key"
# Its own -j build, not a share of a parent make's jobserver: `make test` runs this beside
# the cargo builds and the rootfs download.
unset MAKEFLAGS MFLAGS
K=(make -s -C "$SRC_DIR" O="$BUILD" $(kbuild_args))
log "configuring ($FLAVOR): tinyconfig + ${FRAGMENTS[*]#$ROOT/}"
"${K[@]}" tinyconfig >/dev/null
(cd "$BUILD" && "$SRC_DIR/scripts/kconfig/merge_config.sh" -m -O "$BUILD" "$BUILD/.config" "${FRAGMENTS[@]}" >/dev/null)
"${K[@]}" olddefconfig >/dev/null

# merge_config drops what it cannot satisfy; say exactly what is missing. A later
# fragment overrides an earlier one (as in merge_config), so check the last word on
# each option.
declare -A want=()
order=()
while IFS= read -r line; do
    case $line in
        CONFIG_*=*) opt=${line%%=*} ;;
        "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *} ;;
        *) continue ;;
    esac
    [ -n "${want[$opt]+x}" ] || order+=("$opt")
    want[$opt]=$line
done < <(cat "${FRAGMENTS[@]}")
missing=()
for opt in "${order[@]}"; do
    line=${want[$opt]}
    case $line in
        CONFIG_*=*) grep -qxF "$line" "$BUILD/.config" || missing+=("$line (have: $(grep -E "^(# )?$opt[= ]" "$BUILD/.config" || echo unset))") ;;
        *) grep -qE "^$opt=" "$BUILD/.config" && missing+=("$line (have: $(grep -E "^$opt=" "$BUILD/.config"))") ;;
    esac
done
if ((${#missing[@]})); then
    printf 'error: options missing from the final .config:\n' >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

log "building bzImage + modules in $BUILD (about 5 min on 2 cores)"
t0=$SECONDS
"${K[@]}" -j"$(nproc)" bzImage modules
"${K[@]}" headers_install >/dev/null
log "kernel built in $((SECONDS - t0)) s"
echo "$key" > "$BUILD/.udmabuf-live-key"
