/**
 * Whether a RST or FIN would be taken by its receiver, judged from the middle the way the
 * endpoints judge it (RFC 9293 §3.10.7.4, RFC 5961 §3; Linux's `tcp_in_window` in
 * nf_conntrack_proto_tcp.c is the reference for the window edges). One pure function, shared by
 * the flow table (the live gateway and replay) and the `--streams` recorder, so both end a
 * connection at the same segments.
 *
 * Why it matters: a tracker that closes a connection at any RST lets a spoofed RST end the
 * inspection of a connection the endpoints keep. So:
 * - a RST closes only when its sequence number is the next one expected: the sender's next
 *   sequence number or the receiver's last ACK (RCV.NXT when it sent it), or, after the sender's
 *   FIN, the FIN's own sequence number: Linux takes RCV.NXT − 1 in CLOSE-WAIT, LAST-ACK and
 *   CLOSING (`tcp_reset_check`, extending RFC 5961 §3.2), and a receiver the FIN has not reached
 *   has it as RCV.NXT. A Linux client that closes with unread data sends exactly that RST; a
 *   tracker that kept such a connection would take the next SYN on the 4-tuple (the client's
 *   port reused, the server's socket gone) for a stray one and stall the new connection. In
 *   SYN-SENT (nothing acknowledged yet) a RST is taken only with an ACK of the SYN (RFC 9293
 *   §3.10.7.3);
 * - a RST inside the receiver's window but not exact is one the receiver answers with a challenge
 *   ACK and otherwise ignores (RFC 5961 §3.2): it is forwarded, the connection stays open;
 * - a RST or a FIN outside the window is one no receiver takes: it is dropped.
 *
 * Everything works in byte offsets of the sender's sequence space (wire/seq converts once); the
 * window edges are learnt from the traffic (the sender's highest sequence, the receiver's ACKs)
 * and the window is the largest the receiver may advertise: generous, since a wrong "out of
 * window" would drop a real close, while a wrong "not exact" only keeps inspecting.
 */

/** What the middle knows of one direction: the sender's progress and the receiver's answers. */
export interface WindowView {
  /** One past the highest offset the sender sent (SYN and FIN count), if it sent anything. */
  end: number | undefined;
  /** The receiver's highest ACK of this direction, if it sent one. */
  ack: number | undefined;
  /** Offset of the sender's FIN when nothing was sent beyond it (undefined: no FIN, or data after it). */
  fin?: number | undefined;
  /** The largest window the receiver may advertise (scaled, bytes). */
  maxWin: number;
}

export type Verdict =
  /** Not a RST, or a FIN inside the window: track it as usual. */
  | 'accept'
  /** A RST the receiver takes: the connection ends. */
  | 'rst-close'
  /** A RST inside the window but not exact: forwarded, the connection stays open. */
  | 'rst-not-exact'
  /** Dropped: no receiver takes it. */
  | 'rst-out-of-window'
  | 'fin-out-of-window'
  /** A FIN whose ACK its receiver refuses (RFC 5961 §5.2): dropped with the segment (FlowTable.judge). */
  | 'fin-bad-ack';

/**
 * The slack below and above the learnt window when the receiver announced none yet, and the
 * least window assumed: 65,535 bytes, the largest unscaled window (RFC 9293 §3.1), as Linux's
 * MAXACKWINDOW does when td_maxwin is 0.
 */
const MIN_WINDOW = 65_535;

/**
 * The verdict on a segment starting at offset `off` with `len` payload bytes. `rst`/`fin` are its
 * flags; `synSent` says the connection has seen only the client's SYN (then `ackOfSyn` says
 * whether the RST carries an ACK of exactly that SYN).
 */
export function judge(v: WindowView, rst: boolean, fin: boolean, off: number, len: number, synSent: boolean, ackOfSyn: boolean): Verdict {
  if (!rst && !fin) return 'accept';
  if (rst && synSent) return ackOfSyn ? 'rst-close' : 'rst-out-of-window';
  if (rst && (off === v.end || off === v.ack || off === v.fin)) return 'rst-close';
  if (v.end === undefined && v.ack === undefined) {
    // Nothing learnt of this direction (picked up mid-stream from the other side only): no
    // window to judge against. A RST is kept from closing; a FIN is taken.
    return rst ? 'rst-not-exact' : 'accept';
  }
  // For a RST its sequence number counts; for a FIN, its own position after the payload.
  if (rst) return inWindow(v, off, 0) ? 'rst-not-exact' : 'rst-out-of-window';
  return inWindow(v, off + len, 0) ? 'accept' : 'fin-out-of-window';
}

/**
 * Whether a segment [off, off + len) touches the window: from the lower of what was sent and
 * acknowledged, less a window (old retransmissions and keep-alives sit there), to the higher of
 * them plus the largest window the receiver offered (where the sender may legitimately be).
 * Unknown (nothing learnt) counts as inside.
 */
export function inWindow(v: WindowView, off: number, len: number): boolean {
  const { end, ack } = v;
  if (end === undefined && ack === undefined) return true;
  const win = Math.max(v.maxWin, MIN_WINDOW);
  const a = ack ?? end!;
  const e = end ?? ack!;
  return off + len >= Math.min(a, e) - win && off <= Math.max(a + win, e);
}
