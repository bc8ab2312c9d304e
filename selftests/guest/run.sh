#!/bin/sh
# `make run`: the demonstration, inside the guest. Loads the module and shows the CLI
# talking to it. Writes its exit code to /tmp/ulive-run.rc for the init script.
set -e
trap 'echo $? > /tmp/ulive-run.rc' EXIT
echo "== loading udmabuf_live"
insmod /lib/modules/udmabuf_live.ko
ls -l /dev/udmabuf /dev/udmabuf-live
echo "== udmabuf-ctl status"
udmabuf-ctl status
echo "== udmabuf-ctl status --json"
udmabuf-ctl status --json
echo "== unloading"
rmmod udmabuf_live
echo "== done"
