/**
 * The gateway's clock: Unix-epoch milliseconds with sub-ms resolution (monotonic within the
 * process). Epoch-based so that times inside connection state mean the same on every node of
 * a cluster (snapshots carry hold timers, expiry times, command ages).
 */
// timeOrigin is fixed for the process: read once (a getter into Node's internals per call cost
// a cold call on every batch of an idle gateway).
const ORIGIN = performance.timeOrigin;
export const clock = (): number => ORIGIN + performance.now();
