#!/usr/bin/env bash
# make rootfs: a Debian 13 (trixie) root filesystem for the guest's Wayland tests, built
# from the package registry with mmdebstrap and a private apt configuration (the system's
# apt sources are not changed; the mirror is debian_mirror's: DEBIAN_MIRROR, else the
# system's own apt sources). It holds Weston, Mesa's llvmpipe and what the tests need.
# Cached in $CACHE/rootfs/trixie, keyed on its inputs (suite, package list, this script,
# the mirror): an unchanged second build takes well under a second.
#   ROOTFS_SUITE (default trixie)   ROOTFS_EXTRA="pkg ..." (more packages)
. "$(dirname "$0")/common.sh"

SUITE=${ROOTFS_SUITE:-trixie}
DEST=$CACHE/rootfs/$SUITE
# weston: the compositor (headless backend, GL renderer, kiosk shell, weston-screenshooter).
# libgl1-mesa-dri + libegl-mesa0 + libgles2: Mesa's llvmpipe behind EGL/GLES (the GL renderer).
PACKAGES=(weston libweston-14-0 libgl1-mesa-dri libegl-mesa0 libegl1 libgles2 libgbm1 ${ROOTFS_EXTRA:-})
MIRROR=$(debian_mirror) || die "no Debian mirror in the system's apt sources: set DEBIAN_MIRROR=URL"

key=$( { echo "$SUITE $MIRROR"; printf '%s\n' "${PACKAGES[@]}"; cat "$0"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DEST/.udmabuf-live-key" 2>/dev/null)" = "$key" ]; then
    log "rootfs ($SUITE) up to date: $DEST"; exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap missing: run 'make deps'"
[ "$(id -u)" = 0 ] || die "building the rootfs needs root (mmdebstrap --mode=root)"

log "building the Debian $SUITE rootfs in $DEST from $MIRROR (a few minutes)"
t0=$SECONDS
mkdir -p "$CACHE/rootfs"
tmp=$(mktemp -d "$CACHE/rootfs/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
include=$(printf '%s\n' "${PACKAGES[@]}" | paste -sd, -)
mmdebstrap --quiet --mode=root --variant=essential --components=main \
    --include="$include" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    "$SUITE" "$tmp/root" "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" \
    || die "mmdebstrap failed (mirror $MIRROR, suite $SUITE)"
[ -x "$tmp/root/usr/bin/weston" ] || die "the rootfs has no weston"
echo "$key" > "$tmp/root/.udmabuf-live-key"
rm -rf "$DEST"; mv "$tmp/root" "$DEST"
log "rootfs built in $((SECONDS - t0)) s: $DEST ($(du -sh "$DEST" | cut -f1))"
