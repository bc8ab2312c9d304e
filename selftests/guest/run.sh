#!/bin/sh
# `make run`: the demonstration, inside the guest. Loads the module and runs the session
# the README shows: a buffer on /dev/udmabuf-live follows its memfd through a hole punch,
# the kernel's /dev/udmabuf does not, and `verify` says so. Writes its exit code to
# /tmp/ulive-run.rc for the init script.
set -e
trap 'echo $? > /tmp/ulive-run.rc' EXIT
step() { echo; echo "\$ $*"; "$@"; }
# Wait for a background `create --hold` to print its handle line; print the handle.
handle_of() {
    until h=$(sed -n 's/^handle *//p' "$1" 2>/dev/null) && [ -n "$h" ]; do sleep 0.2; done
    echo "$h"
}

step insmod /lib/modules/udmabuf_live.ko
step udmabuf-ctl status

echo; echo "== a 4 MiB buffer on /dev/udmabuf-live, held in the background"
udmabuf-ctl create --size 4M --fill seq --hold > /tmp/live.out &
LIVE_PID=$!
H=$(handle_of /tmp/live.out)
cat /tmp/live.out
step udmabuf-ctl info "$H"
step udmabuf-ctl punch "$H" --offset 64K --len 8K
step udmabuf-ctl write "$H" --pattern random:7
step udmabuf-ctl sync "$H"
step udmabuf-ctl verify "$H"
step udmabuf-ctl list

echo; echo "== the same on the kernel's /dev/udmabuf: it keeps the old pages"
udmabuf-ctl create --size 4M --fill seq --hold --device /dev/udmabuf > /tmp/builtin.out &
BUILTIN_PID=$!
B=$(handle_of /tmp/builtin.out)
cat /tmp/builtin.out
step udmabuf-ctl punch "$B" --offset 64K --len 8K
step udmabuf-ctl write "$B" --pattern random:7
echo; echo "\$ udmabuf-ctl verify $B"
rc=0; udmabuf-ctl verify "$B" || rc=$?
echo "(exit $rc: 5 means not coherent)"
[ "$rc" = 5 ]
step udmabuf-ctl list --all

echo; echo "== releasing both holders"
kill "$LIVE_PID" "$BUILTIN_PID"
wait "$LIVE_PID" "$BUILTIN_PID" || true
step udmabuf-ctl list --all

echo; echo "== a DRM layout, handed to a command with --exec"
step udmabuf-ctl create --format NV12 --width 1920 --height 1080 --exec -- \
    sh -c 'echo "child: dma-buf fd $UDMABUF_DMABUF_FD, $UDMABUF_FORMAT, strides $UDMABUF_STRIDES, offsets $UDMABUF_OFFSETS"'

step rmmod udmabuf_live
echo; echo "== done"
