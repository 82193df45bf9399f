/**
 * An HTTP proxy on 127.0.0.1 in front of a sandbox S3 server that fails
 * requests the way S3 and networks do, at set rates, with seeded randomness:
 * 503 SlowDown and 500 InternalError before forwarding, a connection reset
 * before forwarding, after the server acted (the answer is lost), and in the
 * middle of the response body, plus added latency. Clients point at
 * `endpoint` instead of the server's; path-style requests pass through
 * unchanged (the sandbox server checks no signatures, so the Host header the
 * client signed is kept). It counts what it injected, by fault and operation.
 */
import {
  Agent,
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { prng } from '../dataset.ts';
import { errorXml, operationOf } from './extensions.ts';

/** Share of requests (0..1) that meet each fault; at most one fault per request. */
export interface FaultRates {
  /** 503 SlowDown, before the server sees the request. */
  readonly slowDown?: number;
  /** 500 InternalError, before the server sees the request. */
  readonly internalError?: number;
  /** The connection is closed before the request is forwarded. */
  readonly resetBefore?: number;
  /** Forwarded and answered by the server, then the connection is closed unanswered. */
  readonly resetAfter?: number;
  /** Forwarded; the headers and part of the body are sent, then the connection is closed. */
  readonly resetMidBody?: number;
  /** Share of requests delayed, and by how long at most (uniform up to `latencyMs`). */
  readonly latency?: number;
  readonly latencyMs?: number;
  /** Only these operations (AWS names: `GetObject`, `CompleteMultipartUpload`) meet faults; default all. */
  readonly operations?: readonly string[];
  /** Inject at most this many faults under these rates (then forward everything). */
  readonly limit?: number;
}

export const FaultKind = {
  SlowDown: 'slowDown',
  InternalError: 'internalError',
  ResetBefore: 'resetBefore',
  ResetAfter: 'resetAfter',
  ResetMidBody: 'resetMidBody',
} as const;
export type FaultKind = (typeof FaultKind)[keyof typeof FaultKind];

export interface FaultCounts {
  /** Requests the proxy received. */
  readonly requests: number;
  /** Requests delayed. */
  readonly delayed: number;
  /** Faults injected, by kind. */
  readonly injected: Readonly<Record<FaultKind, number>>;
  /** Faults injected, by `operation kind` (e.g. `GetObject resetMidBody`). */
  readonly byOperation: Readonly<Record<string, number>>;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT`: give this to clients instead of the server's endpoint. */
  readonly endpoint: string;
  counts(): FaultCounts;
  /** New rates from now on (the counts stay). */
  setRates(rates: FaultRates): void;
  stop(): Promise<void>;
}

export interface FaultProxyOptions {
  /** The S3 server's endpoint, `http://127.0.0.1:PORT`. */
  readonly upstream: string;
  readonly rates?: FaultRates;
  /** Seed of the fault draws (the same seed and request order give the same faults). */
  readonly seed?: number;
}

const ORDER: readonly FaultKind[] = [
  FaultKind.SlowDown,
  FaultKind.InternalError,
  FaultKind.ResetBefore,
  FaultKind.ResetAfter,
  FaultKind.ResetMidBody,
];

const readAll = (stream: IncomingMessage): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
  });

/** Starts a fault proxy in this process and resolves once it listens. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const upstream = new URL(options.upstream);
  const random = prng(options.seed ?? 1);
  let rates: FaultRates = options.rates ?? {};
  let requests = 0;
  let delayed = 0;
  const injected: Record<FaultKind, number> = {
    slowDown: 0,
    internalError: 0,
    resetBefore: 0,
    resetAfter: 0,
    resetMidBody: 0,
  };
  const byOperation = new Map<string, number>();
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const sockets = new Set<Socket>();

  let sinceRates = 0;
  const draw = (operation: string): FaultKind | undefined => {
    let roll = random();
    if (rates.operations !== undefined && !rates.operations.includes(operation)) return undefined;
    if (rates.limit !== undefined && sinceRates >= rates.limit) return undefined;
    for (const kind of ORDER) {
      const rate = rates[kind] ?? 0;
      if (roll < rate) {
        // Taken now, not when injected: requests in flight at once share the limit.
        sinceRates++;
        return kind;
      }
      roll -= rate;
    }
    return undefined;
  };

  const forward = (
    req: IncomingMessage,
    body: Buffer,
  ): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const out = httpRequest(
        {
          agent,
          hostname: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (res) => {
          readAll(res).then(
            (answer) =>
              resolve({ status: res.statusCode ?? 502, headers: res.headers, body: answer }),
            reject,
          );
        },
      );
      out.on('error', reject);
      out.end(body);
    });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readAll(req);
    const operation = operationOf({
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      headers: req.headers,
    });
    requests++;
    const fault = draw(operation);
    if ((rates.latency ?? 0) > 0 && random() < (rates.latency ?? 0)) {
      delayed++;
      await new Promise((resolve) => setTimeout(resolve, random() * (rates.latencyMs ?? 50)));
    }
    const count = (kind: FaultKind) => {
      injected[kind]++;
      const name = `${operation} ${kind}`;
      byOperation.set(name, (byOperation.get(name) ?? 0) + 1);
    };
    if (fault === FaultKind.SlowDown || fault === FaultKind.InternalError) {
      count(fault);
      const slow = fault === FaultKind.SlowDown;
      res.writeHead(slow ? 503 : 500, { 'content-type': 'application/xml' });
      res.end(
        errorXml(
          slow ? 'SlowDown' : 'InternalError',
          slow
            ? 'Please reduce your request rate. (injected by the fault proxy)'
            : 'We encountered an internal error. Please try again. (injected by the fault proxy)',
        ),
      );
      return;
    }
    if (fault === FaultKind.ResetBefore) {
      count(fault);
      req.socket.destroy();
      return;
    }
    const answer = await forward(req, body);
    // A body of one byte cannot be cut in the middle: the answer is lost whole instead.
    const kind =
      fault === FaultKind.ResetMidBody && answer.body.byteLength < 2 ? FaultKind.ResetAfter : fault;
    if (kind === FaultKind.ResetAfter) {
      count(kind);
      req.socket.destroy();
      return;
    }
    const { connection: _connection, 'keep-alive': _keepAlive, ...headers } = answer.headers;
    res.writeHead(answer.status, headers);
    if (kind === FaultKind.ResetMidBody && req.method !== 'HEAD') {
      count(kind);
      res.write(answer.body.subarray(0, Math.floor(answer.body.byteLength / 2)), () =>
        req.socket.destroy(),
      );
      return;
    }
    res.end(answer.body);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // The server itself failed (it is down, or refused): say so as a gateway would.
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`fault proxy: ${err instanceof Error ? err.message : String(err)}`);
      } else req.socket.destroy();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    counts: () => ({
      requests,
      delayed,
      injected: { ...injected },
      byOperation: Object.fromEntries([...byOperation].sort(([a], [b]) => a.localeCompare(b))),
    }),
    setRates(next) {
      rates = next;
      sinceRates = 0;
    },
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
