/**
 * A Service's stable address in the sandbox: a reverse proxy on 127.0.0.1
 * that forwards to whichever pod `target` names at the time of each request,
 * and answers 503 while none is ready, as a Service without endpoints does.
 * A pod leaving the endpoints finishes the requests it already took before it
 * stops (`drain`), as a pod's graceful termination lets it.
 */
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import { pipeline } from 'node:stream';
import { freePort, LOOPBACK } from '../process.ts';

export interface ServiceProxy {
  readonly url: string;
  /** Resolves once no forwarded request to `upstream` is open, or after `timeoutMs`. */
  drain(upstream: string, timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the proxy for Service `service`; `target` gives the ready pod's URL, if any. */
export async function startServiceProxy(
  service: string,
  target: () => string | undefined,
): Promise<ServiceProxy> {
  const open = new Map<string, number>();
  const drained = new Map<string, Array<() => void>>();
  const settle = (upstream: string) => {
    const left = (open.get(upstream) ?? 1) - 1;
    if (left > 0) {
      open.set(upstream, left);
      return;
    }
    open.delete(upstream);
    for (const wake of drained.get(upstream) ?? []) wake();
    drained.delete(upstream);
  };
  const proxy = createServer((req, res) => {
    const upstream = target();
    if (upstream === undefined) {
      res.writeHead(503, { 'Content-Type': 'text/plain' });
      res.end(`no ready endpoints for service ${service}\n`);
      return;
    }
    open.set(upstream, (open.get(upstream) ?? 0) + 1);
    res.once('close', () => settle(upstream));
    const forward = request(
      `${upstream}${req.url ?? '/'}`,
      { method: req.method, headers: req.headers, agent: false },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        // A pod that dies mid-answer cuts the client's connection, as a Service
        // does, rather than leaving the client waiting for a body that never ends.
        pipeline(answer, res, () => undefined);
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
    async drain(upstream, timeoutMs) {
      if (!open.has(upstream)) return;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        drained.set(upstream, [...(drained.get(upstream) ?? []), resolve]);
        timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    },
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
