/**
 * The Node.js TCP proxy baseline of `npm run bench` (issue 7): a `net` server that, for every
 * accepted socket, connects to the target and pipes the two sockets both ways. Nothing else —
 * no parsing, no rewriting: what a user-space proxy costs in Node, to compare tapgate with.
 *
 *   node dist/bench/proxy.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export function startProxy(listenHost: string, listenPort: number, targetHost: string, targetPort: number): Promise<Server> {
  // Half-close is passed on (a FIN one way does not end the other direction), as TCP does.
  const server = createServer({ noDelay: true, allowHalfOpen: true }, (client: Socket) => {
    const upstream = createConnection({ host: targetHost, port: targetPort, noDelay: true, allowHalfOpen: true });
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, listenHost, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [lh, lp, th, tp] = process.argv.slice(2);
  if (lh === undefined || lp === undefined || th === undefined || tp === undefined) {
    process.stderr.write('usage: proxy.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT\n');
    process.exit(1);
  }
  await startProxy(lh, Number(lp), th, Number(tp));
  process.stderr.write(`proxy ${lh}:${lp} -> ${th}:${tp}\n`);
  process.once('SIGTERM', () => process.exit(0));
}
