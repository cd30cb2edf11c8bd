#!/bin/sh
# netns/unpriv.sh CMD [ARGS...] — run CMD as mapped root in a fresh user + mount + network
# namespace, the way the tapgate lab runs without privileges:
#
#   unshare -r -m -n   user namespace (we become uid 0 with a full capability set over the new
#                      namespaces), a mount namespace, and a network namespace owned by it.
#   tmpfs on /run      `ip netns add` bind-mounts the new namespace under /run/netns and the lab
#                      keeps pid files under /run/tapgate; the host's /run is not writable by a
#                      mapped root, so a private tmpfs is mounted over it (and /var/run if it is
#                      not a symlink to /run). It is only visible inside this mount namespace.
#
# Everything created inside (namespaces, veths, bridges, TAPs, processes) disappears when the
# last process of this namespace exits. TAPs need /dev/net/tun to be read+writable by the real
# user (mode 0666, the udev default): a user namespace grants no access to a host device node.
set -eu
if [ "${TAPGATE_IN_UNPRIV:-}" != 1 ]; then
  TAPGATE_IN_UNPRIV=1 exec unshare -r -m -n "$0" "$@"
fi
mount -t tmpfs -o mode=0755 tapgate-run /run
if [ ! -L /var/run ]; then mount -t tmpfs -o mode=0755 tapgate-varrun /var/run; fi
ip link set lo up
exec "$@"
