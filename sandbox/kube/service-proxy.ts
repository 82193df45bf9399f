/**
 * A Service's stable address in the sandbox: a reverse proxy on 127.0.0.1
 * that forwards to whichever pod `target` names at the time of each request,
 * and answers 503 while none is ready, as a Service without endpoints does.
 */
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import { freePort, LOOPBACK } from '../process.ts';

export interface ServiceProxy {
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts the proxy for Service `service`; `target` gives the ready pod's URL, if any. */
export async function startServiceProxy(
  service: string,
  target: () => string | undefined,
): Promise<ServiceProxy> {
  const proxy = createServer((req, res) => {
    const upstream = target();
    if (upstream === undefined) {
      res.writeHead(503, { 'Content-Type': 'text/plain' });
      res.end(`no ready endpoints for service ${service}\n`);
      return;
    }
    const forward = request(
      `${upstream}${req.url ?? '/'}`,
      { method: req.method, headers: req.headers, agent: false },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'Content-Type': 'text/plain' });
      res.end(`upstream ${upstream} failed: ${err.message}\n`);
    });
    req.pipe(forward);
  });
  const port = await freePort();
  proxy.listen(port, LOOPBACK);
  await once(proxy, 'listening');
  let stopping: Promise<void> | undefined;
  return {
    url: `http://${LOOPBACK}:${port}`,
    stop() {
      stopping ??= (async () => {
        const closed = once(proxy, 'close');
        proxy.close();
        proxy.closeAllConnections();
        await closed;
      })();
      return stopping;
    },
  };
}
