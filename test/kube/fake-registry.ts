/**
 * A stand-in registry for controller tests that need no storage: a node:http
 * server answering `/v2/` with 200 and logging like the real one. Tests that
 * need the real process use `realRegistryStarter` instead.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type {
  RegistryConfig,
  RegistryInstance,
  RegistryStarter,
} from '../../sandbox/kube/index.ts';
import { LOOPBACK } from '../../sandbox/process.ts';

export interface FakeRegistries {
  readonly start: RegistryStarter;
  /** Every config a registry was started with, in order. */
  readonly started: RegistryConfig[];
  /** Live instances by URL. */
  readonly live: Map<string, RegistryInstance & { crash(): Promise<void> }>;
}

/** A starter whose registries serve `/v2/` and answer `X-Bucket` with the bucket they were given. */
export function fakeRegistries(): FakeRegistries {
  const started: RegistryConfig[] = [];
  const live: FakeRegistries['live'] = new Map();
  const start: RegistryStarter = async (config) => {
    started.push(config);
    const lines = [
      `level=info msg="starting registry" bucket=${config.bucket} endpoint=${config.endpoint}`,
    ];
    const server = createServer((req, res) => {
      lines.push(`level=info msg="request" method=${req.method} uri=${req.url}`);
      res.writeHead(
        req.url === '/v2/' || req.url?.startsWith('/v2/_catalog') === true ? 200 : 404,
        {
          'Content-Type': 'application/json',
          'X-Bucket': config.bucket,
        },
      );
      res.end(req.url?.startsWith('/v2/_catalog') === true ? '{"repositories":[]}' : '{}');
    });
    server.listen(0, LOOPBACK);
    await once(server, 'listening');
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    let running = true;
    const close = async () => {
      if (!running) return;
      running = false;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    };
    const url = `http://${LOOPBACK}:${port}`;
    const instance = {
      url,
      logs: () => [...lines],
      running: () => running,
      stop: async () => {
        await close();
        live.delete(url);
      },
      crash: async () => {
        lines.push('panic: simulated crash');
        await close();
      },
    };
    live.set(url, instance);
    return instance;
  };
  return { start, started, live };
}
