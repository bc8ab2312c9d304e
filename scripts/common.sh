# The build and cache variables, defined once for the scripts and the Makefile (which
# reads them with `scripts/common.sh VAR`). Sourced by every script, not executed by
# them. Everything heavy (tools, kernel source, kernel builds, the Debian rootfs) lives
# in a cache outside the clone, so a fresh clone on the same machine reuses it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${UDMABUF_LIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/udmabuf-live}
TOOLS=$CACHE/tools
KVER=${KVER:-7.2}
SRC_DIR=$CACHE/src/linux-$KVER
OUT=$ROOT/out            # per-clone outputs: module, static binaries, initramfs, logs
KERNEL_FLAVOR=${KERNEL_FLAVOR:-default}
# The kernel build tree: the user's own (KDIR), else the project's for this flavour.
KBUILD_DIR=${KBUILD_DIR:-${KDIR:-$CACHE/build/$KERNEL_FLAVOR}}
# Module objects go to a directory per kernel (Kbuild MO=), so switching flavours or
# KDIR never mixes objects built for different kernels.
if [ -n "${KDIR:-}" ]; then _mo=kdir-${KDIR//\//_}; else _mo=$KERNEL_FLAVOR; fi
MODULE_OUT=${MODULE_OUT:-$OUT/modules/$_mo}
# The guest binaries: static (glibc, crt-static), for the host's own target triple.
HOST_TARGET=x86_64-unknown-linux-gnu
GUEST_RUSTFLAGS="-C target-feature=+crt-static"
GUEST_BIN_DIR=$ROOT/target/$HOST_TARGET/release

BINDGEN_VERSION=0.72.1
LLVM_SUFFIX=-19
KRUSTC=/usr/bin/rustc

# Arguments every Kbuild invocation takes (kernel and module alike).
kbuild_args() {
    echo LLVM=$LLVM_SUFFIX RUSTC=$KRUSTC HOSTRUSTC=$KRUSTC BINDGEN=$TOOLS/bin/bindgen
}
KBUILD_ARGS=$(kbuild_args)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror to fetch from: DEBIAN_MIRROR, else the first archive (not a security
# or updates archive) that the system's own apt sources name. No host name is written
# into the project.
debian_mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return 0; fi
    local uri
    uri=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
               sed -n 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([a-z]\+:[^[:space:]]*\)[[:space:]]\+\([^[:space:]]*\).*/\2 \3/p'
             for f in /etc/apt/sources.list.d/*.sources; do
                 [ -f "$f" ] || continue
                 awk 'BEGIN{RS="";FS="\n"} { u="";s=""; for(i=1;i<=NF;i++){ if($i ~ /^URIs:/){sub(/^URIs:[ \t]*/,"",$i); split($i,a," "); u=a[1]} if($i ~ /^Suites:/){sub(/^Suites:[ \t]*/,"",$i); split($i,b," "); s=b[1]} if($i ~ /^Enabled:[ \t]*no/){u=""} } if(u!="") print u, s }' "$f"
             done; } | awk '$2 !~ /-(security|updates|backports)$/ && $2 !~ /\/updates$/ && $1 !~ /security/ {print $1; exit}')
    [ -n "$uri" ] || return 1
    echo "${uri%/}"
}

# What counts as a kernel report in a console log or dmesg (the run then fails).
KERNEL_REPORTS='Kernel panic|BUG:|WARNING:|Oops|general protection fault|KASAN|UBSAN|kmemleak: [0-9]+ new suspected|INFO: task .* blocked|rcu: INFO|possible (recursive|circular) locking|inconsistent lock state|Unable to handle|cut here'

# `scripts/common.sh VAR`: print VAR's value (the Makefile's way to read them).
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ $# = 1 ]; then printf '%s\n' "${!1}"; fi
