#!/usr/bin/env python3
"""Minimal ICMP echo ("ping") for the tapgate lab.

The lab cannot count on iputils `ping` being installed, and unprivileged ping sockets are off in
a fresh network namespace (net.ipv4.ping_group_range = "1 0"), so this sends ICMP echo requests
on a raw socket (needs CAP_NET_RAW in the namespace's user namespace: root, or mapped root inside
`unshare -r`). Usage: icmp-ping.py DST [COUNT] [TIMEOUT_S] [SIZE]. Prints one JSON line
{"dst","sent","received","rtt_ms":[...]} and exits 0 if every probe was answered, 1 otherwise.
"""
import json, os, select, socket, struct, sys, time


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def main() -> int:
    dst = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 56
    ident = os.getpid() & 0xFFFF
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    rtts = []
    for seq in range(1, count + 1):
        payload = bytes((i & 0xFF) for i in range(size))
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, seq) + payload
        t0 = time.monotonic()
        s.sendto(pkt, (dst, 0))
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            data, addr = s.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if typ == 0 and rid == ident and rseq == seq and addr[0] == dst:
                rtts.append(round((time.monotonic() - t0) * 1000, 3))
                break
        if seq < count:
            time.sleep(0.05)
    print(json.dumps({"dst": dst, "sent": count, "received": len(rtts), "rtt_ms": rtts}))
    return 0 if len(rtts) == count else 1


if __name__ == "__main__":
    sys.exit(main())
