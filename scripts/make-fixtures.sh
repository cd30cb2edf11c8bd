#!/usr/bin/env bash
# Regenerates the real-capture fixtures in test/fixtures/ (see test/fixtures/README.md).
#
# Needs root and iproute2, ethtool, nft (apt: nftables), tcpdump, dumpcap/editcap/capinfos/tshark,
# python3 and curl. All traffic stays inside two network namespaces joined by one veth pair;
# both namespaces and every process started here are removed on exit.
# The loss is random: the download is repeated (up to LOSS_ATTEMPTS, default 20) until tshark
# sees both retransmissions and out-of-order segments. KEEP_WORK=1 keeps the scratch directory.
#
#   tgfx-a  10.199.0.1/24  (tgfx-va)  python3 -m http.server 8000   ("server")
#   tgfx-b  10.199.0.2/24  (tgfx-vb)  curl; captures run here        ("client", the receiver)
#
# Offloads (TSO/GSO/GRO/checksum) are off on both veth ends so every captured frame is MTU-sized
# and carries a real checksum, as it would on a physical wire.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=test/fixtures
mkdir -p "$OUT"

NS_A=tgfx-a
NS_B=tgfx-b
DEV_A=tgfx-va
DEV_B=tgfx-vb
IP_A=10.199.0.1
IP_B=10.199.0.2
PORT=8000
LOCAL_PORT=40123 # the client port reused by two connections (4-tuple reuse) in http-small

WORK=$(mktemp -d /tmp/tgfx.XXXXXX)
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$NS_A" 2>/dev/null
  ip netns del "$NS_B" 2>/dev/null
  if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

for tool in ip ethtool nft tcpdump dumpcap editcap tshark capinfos python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (apt-get install it)" >&2; exit 1; }
done

inA() { ip netns exec "$NS_A" "$@"; }
inB() { ip netns exec "$NS_B" "$@"; }

# --- topology -----------------------------------------------------------------------------
ip netns del "$NS_A" 2>/dev/null || true
ip netns del "$NS_B" 2>/dev/null || true
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$DEV_A" netns "$NS_A" type veth peer name "$DEV_B" netns "$NS_B"
inA ip addr add "$IP_A/24" dev "$DEV_A"
inB ip addr add "$IP_B/24" dev "$DEV_B"
for ns in "$NS_A" "$NS_B"; do ip netns exec "$ns" ip link set lo up; done
inA ip link set "$DEV_A" up
inB ip link set "$DEV_B" up
inA ethtool -K "$DEV_A" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
inB ethtool -K "$DEV_B" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true

# --- content ------------------------------------------------------------------------------
WWW="$WORK/www"
mkdir -p "$WWW"
printf 'Hello world\n' >"$WWW/hello.txt"
printf '<html><body><p>Hello world</p></body></html>\n' >"$WWW/index.html"
# ~100 KB of numbered text lines: readable in a follow dump, every byte position identifiable.
python3 - "$WWW/big.txt" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(1, 1601):
        f.write(f"line {i:05d} the quick brown fox jumps over the lazy dog 0123456789 abc\n")
EOF

ip netns exec "$NS_A" python3 -m http.server "$PORT" --bind "$IP_A" --directory "$WWW" >"$WORK/http.log" 2>&1 &
PIDS+=($!)
# A second server on tgfx-b's loopback: traffic on a second capture interface for the pcapng.
ip netns exec "$NS_B" python3 -m http.server 8001 --bind 127.0.0.1 --directory "$WWW" >"$WORK/http-lo.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  if inA ss -ltn | grep -q ":$PORT " && inB ss -ltn | grep -q ":8001 "; then break; fi
  sleep 0.1
done
# ARP once outside the captures, so every fixture starts with TCP (and is easier to read).
inB curl -sS -o /dev/null "http://$IP_A:$PORT/hello.txt"

# start_capture NAME CMD...: run a capture in tgfx-b, wait until it reports it is listening.
start_capture() {
  local name=$1; shift
  # `ip netns exec` execs the command, so $! is the capture process itself (not a subshell).
  ip netns exec "$NS_B" "$@" 2>"$WORK/$name.err" &
  PIDS+=($!)
  eval "CAP_$name=$!"
  for _ in $(seq 100); do
    if grep -qE 'listening on|Capturing on' "$WORK/$name.err"; then return 0; fi
    sleep 0.1
  done
  echo "capture $name did not start:" >&2; cat "$WORK/$name.err" >&2; exit 1
}
stop_capture() {
  local pid_var="CAP_$1"
  local pid=${!pid_var}
  sleep 1 # let the last frames reach the capture (libpcap TPACKET_V3 blocks time out after 1 s)
  kill -INT "$pid"
  wait "$pid" || true
}
count() { capinfos -c -M "$1" | awk -F: '/Number of packets/ {gsub(/ /, "", $2); print $2}'; }

# --- (a) http-small.pcap + (d) http-small-nano.pcap + dumpcap pcapng + SLL, one run ---------
start_capture small tcpdump -i "$DEV_B" -s 0 -U --immediate-mode --time-stamp-precision=micro -w "$WORK/http-small.pcap" tcp
start_capture nano tcpdump -i "$DEV_B" -s 0 -U --immediate-mode --time-stamp-precision=nano -w "$WORK/http-small-nano.pcap" tcp
start_capture dumpcap dumpcap -q -i "$DEV_B" -i lo -s 0 -f tcp -w "$WORK/http-dumpcap.pcapng"
start_capture any tcpdump -i any -s 0 -U --immediate-mode -w "$WORK/any-sll2.pcap" "tcp port 8001"

inB curl -sS -o /dev/null "http://$IP_A:$PORT/hello.txt"
inB curl -sS -o /dev/null "http://$IP_A:$PORT/"
inB curl -sS -o /dev/null "http://$IP_A:$PORT/missing"            # 404
# The same 4-tuple twice (client port $LOCAL_PORT). Whichever side closed first holds the
# 4-tuple in TIME_WAIT; the kernel lets a new connection reuse it when its timestamp is newer
# (RFC 6191; tcp_tw_reuse on the client side), as busy clients do in the wild. curl cannot set
# SO_REUSEADDR, which the bind() to a TIME_WAIT port needs, hence these lines of Python.
inB sysctl -qw net.ipv4.tcp_tw_reuse=1
get_from_fixed_port() {
  inB python3 - "$IP_B" "$LOCAL_PORT" "$IP_A" "$PORT" "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.connect((sys.argv[3], int(sys.argv[4])))
s.sendall(f"GET {sys.argv[5]} HTTP/1.1\r\nHost: {sys.argv[3]}\r\nConnection: close\r\n\r\n".encode())
while s.recv(65536):
    pass
s.close()
PY
}
get_from_fixed_port /hello.txt
sleep 2.5 # > tcp_tw_reuse_delay (1 s) and a timestamp tick
get_from_fixed_port /index.html
inB curl -sS -o /dev/null "http://127.0.0.1:8001/hello.txt"       # loopback: 2nd interface

stop_capture small
stop_capture nano
stop_capture dumpcap
stop_capture any

# --- (b) http-loss.pcap: ~100 KB download over a lossy path -------------------------------
# Loss on both sides of the capture point (tgfx-vb), so the capture shows both kinds a gateway
# sees inline: 3% of server->client segments die in tgfx-a's OUTPUT hook, before the capture
# (holes, then out-of-order / retransmitted fills), and 2% more die in tgfx-b's INPUT hook after
# the capture (the original is captured, then a spurious-looking retransmission). SYNs are
# spared: a lost SYN costs a 1 s RTO and adds nothing.
inA nft -f - <<EOF
table inet tgfx {
  chain out {
    type filter hook output priority 0;
    tcp sport $PORT tcp flags & syn == 0 numgen random mod 100 < 3 drop
  }
}
EOF
inB nft -f - <<EOF
table inet tgfx {
  chain in {
    type filter hook input priority 0;
    tcp sport $PORT tcp flags & syn == 0 numgen random mod 100 < 2 drop
  }
}
EOF
ok=
for attempt in $(seq ${LOSS_ATTEMPTS:-20}); do
  rm -f "$WORK/http-loss.pcap"
  start_capture loss tcpdump -i "$DEV_B" -s 0 -U --immediate-mode -w "$WORK/http-loss.pcap" tcp
  inB curl -sS -o "$WORK/big.out" "http://$IP_A:$PORT/big.txt"
  stop_capture loss
  cmp -s "$WORK/big.out" "$WWW/big.txt" || { echo "download corrupted" >&2; exit 1; }
  rtx=$(tshark -r "$WORK/http-loss.pcap" -Y tcp.analysis.retransmission -T fields -e frame.number | wc -l)
  ooo=$(tshark -r "$WORK/http-loss.pcap" -Y tcp.analysis.out_of_order -T fields -e frame.number | wc -l)
  echo "loss attempt $attempt: frames=$(count "$WORK/http-loss.pcap") retransmissions=$rtx out-of-order=$ooo"
  if [ "$rtx" -ge 2 ] && [ "$ooo" -ge 1 ]; then ok=1; break; fi
done
[ -n "$ok" ] || { echo "could not produce a capture with both retransmissions and out-of-order" >&2; exit 1; }
inA nft delete table inet tgfx
inB nft delete table inet tgfx

# --- (c) http-small.pcapng: the very same frames as http-small.pcap, as pcapng ---------------
editcap -F pcapng "$WORK/http-small.pcap" "$WORK/http-small.pcapng"

n_small=$(count "$WORK/http-small.pcap")
n_nano=$(count "$WORK/http-small-nano.pcap")
[ "$n_small" = "$n_nano" ] || { echo "micro ($n_small) and nano ($n_nano) captures differ" >&2; exit 1; }

for f in http-small.pcap http-small-nano.pcap http-small.pcapng http-dumpcap.pcapng any-sll2.pcap http-loss.pcap; do
  cp "$WORK/$f" "$OUT/$f"
  printf '%-24s %8d bytes %5s frames\n' "$f" "$(stat -c %s "$OUT/$f")" "$(count "$OUT/$f")"
done
