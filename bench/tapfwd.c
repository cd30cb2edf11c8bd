/*
 * tapfwd: the minimal C forwarder between two TAP devices, the baseline of `npm run bench`
 * (issue 7). It does what tapgate does minus everything interesting: frames read from one TAP
 * are written unchanged to the other.
 *
 *   tapfwd TAP_A TAP_B [--vnet]
 *
 * Without --vnet: IFF_TAP | IFF_NO_PI, offloads cleared (a persistent TAP keeps what its last
 * user set), so the kernel hands over MTU-sized, fully checksummed frames.
 * With --vnet: IFF_VNET_HDR, TUNSETVNETHDRSZ 10, TUNSETOFFLOAD csum|TSO4|TSO6: frames up to
 * 64 KiB with partial checksums, the virtio-net header passed through as is.
 *
 * Loop: poll() both fds; a readable fd is drained (non-blocking reads until EAGAIN, at most 64
 * frames) and every frame written to the other fd (a full TAP queue drops the frame, as a
 * wire would). Runs until killed. The benchmark compiles it with `cc -O2` into a temp dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_FRAME (10 + 14 + 65535 + 64)

static int open_tap(const char *name, int vnet) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (fd < 0) {
    perror("open /dev/net/tun");
    exit(2);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "TUNSETIFF %s: %s\n", name, strerror(errno));
    exit(2);
  }
  if (vnet) {
    int sz = 10;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      perror("TUNSETVNETHDRSZ");
      exit(2);
    }
  }
  unsigned int off = vnet ? (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) : 0;
  if (ioctl(fd, TUNSETOFFLOAD, off) < 0) {
    perror("TUNSETOFFLOAD");
    exit(2);
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s TAP_A TAP_B [--vnet]\n", argv[0]);
    return 1;
  }
  int vnet = argc > 3 && strcmp(argv[3], "--vnet") == 0;
  int fds[2] = {open_tap(argv[1], vnet), open_tap(argv[2], vnet)};
  static unsigned char buf[MAX_FRAME];
  unsigned long long frames = 0, drops = 0;
  fprintf(stderr, "tapfwd: %s <-> %s%s\n", argv[1], argv[2], vnet ? " (vnet hdr, TSO)" : "");
  struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
  for (;;) {
    int n = poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 2;
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      for (int k = 0; k < 64; k++) {
        ssize_t r = read(fds[i], buf, sizeof buf);
        if (r < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          perror("read");
          return 2;
        }
        if (write(fds[1 - i], buf, (size_t)r) < 0) drops++;
        frames++;
      }
    }
  }
  (void)frames;
  (void)drops;
  return 0;
}
