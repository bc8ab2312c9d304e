#!/usr/bin/env bash
# Provide an unpacked Linux $KVER source tree in $SRC_DIR. Tried in order:
#   1. KERNEL_SOURCE=PATH   a linux-source .deb, a .tar.xz/.tar.gz tarball or a source dir
#   2. an already unpacked tree in the cache
#   3. Debian's linux-source-$KVER package, fetched with a private apt configuration
#      (the system's apt sources are not touched), from each suite in turn
#   4. a local mirror of that package: KERNEL_SOURCE_MIRROR, or ../shared/kernel-source
. "$(dirname "$0")/common.sh"

STAMP=$SRC_DIR/.udmabuf-live-source
PKG=linux-source-$KVER
SUITES=${KERNEL_SOURCE_SUITES:-"sid experimental trixie-backports forky trixie"}
MIRROR_URL=$(debian_mirror) || MIRROR_URL=

unpack_tarball() { # tarball origin
    local tmp; tmp=$(mktemp -d "$CACHE/src/unpack.XXXXXX")
    log "unpacking $1"
    tar -xf "$1" -C "$tmp"
    local top; top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n1)
    [ -f "$top/Makefile" ] || die "$1 does not contain a kernel source tree"
    rm -rf "$SRC_DIR"; mv "$top" "$SRC_DIR"; rm -rf "$tmp"
    echo "$2" > "$STAMP"
}

unpack_deb() { # deb origin
    local tmp; tmp=$(mktemp -d "$CACHE/src/deb.XXXXXX")
    dpkg-deb -x "$1" "$tmp"
    local tb; tb=$(ls "$tmp"/usr/src/linux-source-*.tar.* 2>/dev/null | head -n1)
    [ -n "$tb" ] || die "$1 has no usr/src/linux-source-*.tar.* inside"
    unpack_tarball "$tb" "$2"
    rm -rf "$tmp"
}

from_path() {
    local p=$1
    if [ -d "$p" ]; then
        [ -f "$p/Makefile" ] || die "KERNEL_SOURCE=$p is a directory without a kernel Makefile"
        rm -rf "$SRC_DIR"; ln -sfn "$(cd "$p" && pwd)" "$SRC_DIR"
    else
        case $p in
            *.deb) unpack_deb "$p" "$p" ;;
            *.tar.*|*.tgz) unpack_tarball "$p" "$p" ;;
            *) die "KERNEL_SOURCE=$p: expected a .deb, a tarball or a directory" ;;
        esac
    fi
}

from_registry() {
    if [ -z "$MIRROR_URL" ]; then
        log "no Debian mirror in the system's apt sources; set DEBIAN_MIRROR=URL to fetch from one"
        return 1
    fi
    local apt=$CACHE/apt; mkdir -p "$apt/lists/partial" "$apt/archives/partial"
    local suite
    for suite in $SUITES; do
        log "looking for $PKG in Debian suite '$suite'"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR_URL $suite main" > "$apt/sources.list"
        local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
                    -o Dir::State::Lists="$apt/lists" -o Dir::Cache::Archives="$apt/archives"
                    -o Dir::Cache="$apt" -o APT::Get::List-Cleanup=0 -o Acquire::Languages=none)
        apt-get "${opts[@]}" -qq update 2>/dev/null || { log "  suite '$suite' unreachable"; continue; }
        apt-cache "${opts[@]}" show "$PKG" >/dev/null 2>&1 || { log "  not in '$suite'"; continue; }
        (cd "$apt/archives" && rm -f "$PKG"_*.deb && apt-get "${opts[@]}" -qq download "$PKG") || continue
        local deb; deb=$(ls "$apt/archives/$PKG"_*.deb | head -n1)
        unpack_deb "$deb" "debian:$suite:$(basename "$deb")"
        rm -f "$deb"
        return 0
    done
    return 1
}

from_mirror() {
    local m=${KERNEL_SOURCE_MIRROR:-$ROOT/../shared/kernel-source}
    local deb; deb=$(ls "$m/$PKG"_*.deb 2>/dev/null | head -n1) || true
    [ -n "$deb" ] || return 1
    log "using the local mirror $deb"
    if [ -f "$m/SHA256SUMS" ]; then
        (cd "$m" && sha256sum --quiet -c SHA256SUMS) || die "checksum mismatch in $m"
    fi
    unpack_deb "$deb" "mirror:$deb"
}

mkdir -p "$CACHE/src"
if [ -n "${KERNEL_SOURCE:-}" ]; then
    if [ "$(cat "$STAMP" 2>/dev/null)" != "$KERNEL_SOURCE" ]; then from_path "$KERNEL_SOURCE"; fi
elif [ -f "$STAMP" ] || [ -L "$SRC_DIR" ]; then
    log "kernel source: $(cat "$STAMP" 2>/dev/null || readlink "$SRC_DIR")"
elif ! from_registry && ! from_mirror; then
    die "could not find $PKG.
  Looked for: Debian package $PKG in suites [$SUITES] at $MIRROR_URL,
              and a local mirror at ${KERNEL_SOURCE_MIRROR:-$ROOT/../shared/kernel-source}.
  Fix one of:
    make deps KERNEL_SOURCE=/path/to/linux-$KVER.tar.xz   (or a linux-source .deb, or a source dir)
    make deps KERNEL_SOURCE_SUITES='other-suite'           (Debian suites to try)
    make test KDIR=/path/to/your/rust-enabled/kernel/build (skip our kernel entirely)"
fi
[ -f "$SRC_DIR/Makefile" ] || die "kernel source at $SRC_DIR is incomplete; remove it and rerun"
log "kernel source ready: $SRC_DIR ($(make -s -C "$SRC_DIR" kernelversion))"
