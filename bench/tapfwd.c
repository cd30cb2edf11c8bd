/*
 * tapfwd: the minimal C forwarder between two TAP devices, the baseline of `npm run bench`
 * (issue 7). It does what tapgate does minus everything interesting: frames read from one TAP
 * are written unchanged to the other.
 *
 *   tapfwd TAP_A TAP_B [--vnet] [--queues N]
 *
 * Without --vnet: IFF_TAP | IFF_NO_PI, offloads cleared (a persistent TAP keeps what its last
 * user set), so the kernel hands over MTU-sized, fully checksummed frames.
 * With --vnet: IFF_VNET_HDR, TUNSETVNETHDRSZ 10, TUNSETOFFLOAD csum|TSO4|TSO6: frames up to
 * 64 KiB with partial checksums, the virtio-net header passed through as is.
 *
 * Loop: poll() both fds; a readable fd is drained (non-blocking reads until EAGAIN, at most 64
 * frames) and every frame written to the other fd (a full TAP queue drops the frame, as a
 * wire would). Runs until killed. The benchmark compiles it with `cc -O2` into a temp dir.
 *
 * --queues N (issue 18's multi-queue evaluation): both TAPs must have been created multi-queue
 * (`ip tuntap add … multi_queue`); N threads, thread k attaching queue k of each TAP
 * (IFF_MULTI_QUEUE) and forwarding between those two. The kernel picks a frame's queue by its
 * flow's symmetric hash, and remembers which queue wrote a flow (tun_flow_update): both
 * directions of a connection meet in one thread, the partitioning a per-connection gateway needs.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_FRAME (10 + 14 + 65535 + 64)

static int open_tap(const char *name, int vnet, int mq) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (fd < 0) {
    perror("open /dev/net/tun");
    exit(2);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0) | (mq ? IFF_MULTI_QUEUE : 0);
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

struct pair {
  int fds[2];
};

/* Forwards between one queue of each TAP until killed. */
static void *forward(void *arg) {
  const struct pair *q = arg;
  unsigned char *buf = malloc(MAX_FRAME);
  if (buf == NULL) {
    perror("malloc");
    exit(2);
  }
  struct pollfd p[2] = {{q->fds[0], POLLIN, 0}, {q->fds[1], POLLIN, 0}};
  for (;;) {
    int n = poll(p, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      exit(2);
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      for (int k = 0; k < 64; k++) {
        ssize_t r = read(q->fds[i], buf, MAX_FRAME);
        if (r < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          perror("read");
          exit(2);
        }
        (void)!write(q->fds[1 - i], buf, (size_t)r); /* a full queue drops it, as a wire would */
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s TAP_A TAP_B [--vnet] [--queues N]\n", argv[0]);
    return 1;
  }
  int vnet = 0, queues = 1;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--vnet") == 0) vnet = 1;
    else if (strcmp(argv[i], "--queues") == 0 && i + 1 < argc) queues = atoi(argv[++i]);
    else {
      fprintf(stderr, "tapfwd: unknown argument %s\n", argv[i]);
      return 1;
    }
  }
  if (queues < 1 || queues > 64) {
    fprintf(stderr, "tapfwd: --queues must be 1..64\n");
    return 1;
  }
  int mq = queues > 1;
  struct pair *qs = calloc((size_t)queues, sizeof *qs);
  if (qs == NULL) return 2;
  for (int k = 0; k < queues; k++) {
    qs[k].fds[0] = open_tap(argv[1], vnet, mq);
    qs[k].fds[1] = open_tap(argv[2], vnet, mq);
  }
  fprintf(stderr, "tapfwd: %s <-> %s%s, %d queue%s\n", argv[1], argv[2], vnet ? " (vnet hdr, TSO)" : "", queues, queues > 1 ? "s" : "");
  for (int k = 1; k < queues; k++) {
    pthread_t t;
    if (pthread_create(&t, NULL, forward, &qs[k]) != 0) {
      fprintf(stderr, "tapfwd: cannot start thread %d\n", k);
      return 2;
    }
  }
  forward(&qs[0]);
  return 0;
}
