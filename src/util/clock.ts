/**
 * The gateway's clock: Unix-epoch milliseconds with sub-ms resolution (monotonic within the
 * process). Epoch-based so that times inside connection state mean the same on every node of
 * a cluster (snapshots carry hold timers, expiry times, command ages).
 */
export const clock = (): number => performance.timeOrigin + performance.now();
