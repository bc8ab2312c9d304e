#!/usr/bin/env bash
# make deps: install what the project needs, idempotently.
#  1. Debian packages (skipped when already installed)
#  2. bindgen-cli into $CACHE/tools (the distro's is too old for 7.2)
#  3. the Linux 7.2 source (scripts/kernel-source.sh)
#  4. a rustavailable check of the kernel Rust toolchain
. "$(dirname "$0")/common.sh"

PKGS=(
    build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils kmod python3 rsync
    clang-19 lld-19 llvm-19 libclang-19-dev
    rustc-web rust-web-src rust-web-clippy rustfmt-web
    qemu-system-x86 busybox-static
    mmdebstrap debian-archive-keyring   # the Debian 13 guest rootfs (scripts/rootfs.sh)
)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get could not install: ${missing[*]}"
else
    log "system packages: all present"
fi

# The kernel source download runs beside the bindgen build (one waits on the network,
# the other on the CPU).
src_pid=
[ -n "${KDIR:-}" ] || { "$ROOT/scripts/kernel-source.sh" & src_pid=$!; }

if [ -x "$TOOLS/bin/bindgen" ] && "$TOOLS/bin/bindgen" --version | grep -q "$BINDGEN_VERSION"; then
    log "bindgen $BINDGEN_VERSION: present"
else
    log "building bindgen-cli $BINDGEN_VERSION into $TOOLS"
    LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install bindgen-cli --locked \
        --version "$BINDGEN_VERSION" --root "$TOOLS" --quiet
fi

if [ -z "${KDIR:-}" ]; then
    wait "$src_pid" || die "could not fetch the Linux $KVER source (above)"
    log "checking the kernel Rust toolchain"
    make -s -C "$SRC_DIR" $(kbuild_args) rustavailable
else
    log "KDIR=$KDIR: using that kernel build, no source needed"
    make -s -C "$KDIR" $(kbuild_args) rustavailable
fi
