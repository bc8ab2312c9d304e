# Shared settings for the build scripts. Sourced, not executed.
# Everything heavy (tools, kernel source, kernel build) lives in a cache outside the
# clone, so a fresh clone on the same machine reuses it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${UDMABUF_LIVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/udmabuf-live}
TOOLS=$CACHE/tools
KVER=${KVER:-7.2}
SRC_DIR=$CACHE/src/linux-$KVER
OUT=$ROOT/out            # per-clone outputs: module, static binaries, initramfs, logs

BINDGEN_VERSION=0.72.1
LLVM_SUFFIX=-19
KRUSTC=/usr/bin/rustc

# Arguments every Kbuild invocation takes (kernel and module alike).
kbuild_args() {
    echo LLVM=$LLVM_SUFFIX RUSTC=$KRUSTC HOSTRUSTC=$KRUSTC BINDGEN=$TOOLS/bin/bindgen
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
