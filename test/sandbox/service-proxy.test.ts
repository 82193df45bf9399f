/**
 * The sandbox's Service: a reverse proxy on 127.0.0.1 that forwards each
 * request to the pod ready at the time, over real HTTP. A pod leaving it
 * finishes what it took (drain), and a pod that dies mid-answer cuts the
 * client's connection instead of leaving it waiting.
 */
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type ServiceProxy, startServiceProxy } from '../../sandbox/kube/service-proxy.ts';

let upstream: Server;
let upstreamUrl = '';
let proxy: ServiceProxy;
let target: string | undefined;
/** Answers the upstream holds back until a test lets them go. */
const held: ServerResponse[] = [];

beforeAll(async () => {
  upstream = createServer((req, res) => {
    if (req.url === '/hold') {
      held.push(res);
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write('first half ');
      return;
    }
    if (req.url === '/die') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '100' });
      res.write('a part of the body');
      setTimeout(() => res.socket?.destroy(), 50);
      return;
    }
    res.end(`answered ${req.url}`);
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  proxy = await startServiceProxy('registry', () => target);
});

afterAll(async () => {
  for (const res of held) res.destroy();
  await proxy?.stop();
  upstream?.closeAllConnections();
  upstream?.close();
});

describe("the sandbox's Service proxy", () => {
  it('answers 503 without a ready pod and forwards to the ready one', async () => {
    // Prepare
    target = undefined;
    // Act
    const none = await fetch(`${proxy.url}/v2/`);
    await none.body?.cancel();
    target = upstreamUrl;
    const some = await fetch(`${proxy.url}/v2/`);
    // Assess
    expect(none.status).toBe(503);
    expect(some.status).toBe(200);
    expect(await some.text()).toBe('answered /v2/');
  });

  it('lets a leaving pod finish the request it took before drain resolves', async () => {
    // Prepare
    target = upstreamUrl;
    const response = await fetch(`${proxy.url}/hold`);
    let drained = false;
    // Act
    const draining = proxy.drain(upstreamUrl, 10_000).then(() => {
      drained = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const drainedBeforeEnd = drained;
    held.shift()?.end('second half');
    const body = await response.text();
    await draining;
    // Assess
    expect(drainedBeforeEnd).toBe(false);
    expect(body).toBe('first half second half');
    expect(drained).toBe(true);
  });

  it('gives up draining after its timeout', async () => {
    // Prepare
    target = upstreamUrl;
    const response = await fetch(`${proxy.url}/hold`);
    const started = Date.now();
    // Act
    await proxy.drain(upstreamUrl, 300);
    // Assess
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    held.shift()?.end();
    await response.body?.cancel();
  });

  it("cuts the client's connection when the pod dies mid-answer", async () => {
    // Prepare
    target = upstreamUrl;
    const response = await fetch(`${proxy.url}/die`);
    // Act
    const read = response.text().then(
      () => 'ended',
      () => 'cut',
    );
    // Assess
    expect(await Promise.race([read, new Promise((r) => setTimeout(() => r('hung'), 5_000))])).toBe(
      'cut',
    );
  });
});
