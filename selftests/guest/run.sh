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

if [ -x /debian/usr/bin/weston ]; then
    echo; echo "== the same in a compositor: Weston 14 (headless, GL renderer on llvmpipe, kiosk shell)"
    for d in dev proc sys tmp; do mount --bind /$d /debian/$d; done
    mkdir -p -m 700 /tmp/xdg
    export XDG_RUNTIME_DIR=/tmp/xdg WAYLAND_DISPLAY=demo
    # (its stderr warns that --debug is on: kept out of the console, where "WARNING:" fails the run)
    chroot /debian env XDG_RUNTIME_DIR=/tmp/xdg HOME=/tmp weston --backend=headless --renderer=gl \
        --shell=kiosk --debug --idle-time=0 --width=250 --height=100 --socket=demo --log=/tmp/weston.log 2>/tmp/weston.stderr &
    WESTON_PID=$!
    until udmabuf-ctl present --list-formats >/dev/null 2>&1; do sleep 0.5; done
    shown() { until grep -qx "shown $2" "$1" 2>/dev/null; do sleep 0.2; done; }
    shot() { # NAME: the whole output as out/wayland/NAME.png
        rm -rf /tmp/shot && mkdir /tmp/shot
        chroot /debian env XDG_RUNTIME_DIR=/tmp/xdg WAYLAND_DISPLAY=demo sh -c 'cd /tmp/shot && weston-screenshooter'
        cp /tmp/shot/*.png "/shots/$1.png"
        echo "screenshot: out/wayland/$1.png"
    }
    for dev in /dev/udmabuf-live /dev/udmabuf; do
        n=${dev#/dev/}
        echo; echo "-- $dev: an XR24 250x100 buffer filled with 0x40 (dark grey), shown by udmabuf-ctl present"
        udmabuf-ctl create --format XR24 --width 250 --height 100 --fill 0x40 --hold --device "$dev" > "/tmp/$n.out" &
        HOLD_PID=$!
        H=$(handle_of "/tmp/$n.out")
        echo "\$ udmabuf-ctl present $H --format XR24 --width 250 --height 100 &"
        udmabuf-ctl present "$H" --format XR24 --width 250 --height 100 < /dev/null > "/tmp/$n.present" &
        PRESENT_PID=$!
        shown "/tmp/$n.present" 1
        shot "$n-before"
        step udmabuf-ctl punch "$H" --offset 16K --len 32K
        step udmabuf-ctl write "$H" --pattern 0xc0
        echo "\$ kill -USR1 $PRESENT_PID    # present commits the same wl_buffer again"
        kill -USR1 "$PRESENT_PID"
        shown "/tmp/$n.present" 2
        shot "$n-after"
        kill "$PRESENT_PID" "$HOLD_PID"; wait "$PRESENT_PID" "$HOLD_PID" || true
    done
    echo "(udmabuf-live-after.png is light grey (0xc0) everywhere; udmabuf-after.png still shows a dark (0x40) band"
    echo " in rows 16-47, the punched 32 KiB: the built-in driver kept the old pages)"
    kill "$WESTON_PID"; wait "$WESTON_PID" || true
else
    echo; echo "(no Debian rootfs at /debian: the compositor part is skipped; make rootfs)"
fi

step rmmod udmabuf_live
echo; echo "== done"
