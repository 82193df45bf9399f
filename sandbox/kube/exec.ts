/**
 * `pods/exec` for the fake apiserver: the WebSocket remote-command protocol
 * that `kubectl exec` and `@kubernetes/client-node`'s Exec speak
 * (subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`). Each binary
 * message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the
 * command's end as a Status, 4 terminal resize; v5 adds 255, "close this
 * channel" (the client's end of stdin). The command runs wherever the test
 * says (`PodExecHandler`): a real `pg_dump` against the sandbox's
 * PostgreSQL, the text of a config file. The WebSocket framing is the `ws`
 * library's.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { PassThrough, type Readable } from 'node:stream';
import { WebSocketServer } from 'ws';

/** What a command run in a pod reads and writes. */
export interface PodExecIo {
  /** The client's stdin, ended when the client closes it (empty unless `stdin=true`). */
  readonly stdin: Readable;
  stdout(chunk: Buffer | string): void;
  stderr(chunk: Buffer | string): void;
}

/** Runs `command` in a pod's container; resolves with its exit code. */
export type PodExecHandler = (
  command: readonly string[],
  io: PodExecIo,
  container: string | undefined,
) => Promise<number>;

const PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'] as const;
const Channel = { Stdin: 0, Stdout: 1, Stderr: 2, Status: 3, Resize: 4, Close: 255 } as const;

const wss = new WebSocketServer({
  noServer: true,
  handleProtocols: (offered) => PROTOCOLS.find((protocol) => offered.has(protocol)) ?? false,
});

/** The Status the apiserver sends on channel 3 when a command ends. */
function endStatus(code: number): unknown {
  return code === 0
    ? { metadata: {}, status: 'Success' }
    : {
        metadata: {},
        status: 'Failure',
        message: `command terminated with non-zero exit code: error executing command, exit status ${code}`,
        reason: 'NonZeroExitCode',
        details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
      };
}

/** True when the request asks for an upgrade to a protocol exec speaks. */
export function wantsExecSocket(req: IncomingMessage): boolean {
  const offered = String(req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((protocol) => protocol.trim());
  return PROTOCOLS.some((protocol) => offered.includes(protocol));
}

/**
 * Takes over an upgrade request already authorised for `pods/exec` and runs
 * the command its query names (`command`, repeated; `container`; `stdin`).
 */
export function serveExec(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  query: URLSearchParams,
  handler: PodExecHandler,
): void {
  const command = query.getAll('command');
  const container = query.get('container') ?? undefined;
  // As PodExecOptions: stdin off unless asked for, stdout and stderr on unless turned off.
  const flag = (name: string, otherwise: boolean) => {
    const value = query.get(name);
    return value === null ? otherwise : value === 'true' || value === '1';
  };
  const wantsStdin = flag('stdin', false);
  const wanted: Record<number, boolean> = {
    [Channel.Stdout]: flag('stdout', true),
    [Channel.Stderr]: flag('stderr', true),
  };
  wss.handleUpgrade(req, socket, head, (ws) => {
    const stdin = new PassThrough();
    if (!wantsStdin) stdin.end();
    const send = (channel: number, chunk: Buffer | string) => {
      // A stream the client did not ask for has no channel: its output is dropped.
      if (ws.readyState !== ws.OPEN || wanted[channel] === false) return;
      const body = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      ws.send(Buffer.concat([Buffer.from([channel]), body]));
    };
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const bytes = isBinary ? data : Buffer.from(data.toString('utf8'));
      const channel = bytes[0];
      if (channel === Channel.Stdin && wantsStdin && !stdin.writableEnded)
        stdin.write(bytes.subarray(1));
      else if (channel === Channel.Close && bytes[1] === Channel.Stdin) stdin.end();
    });
    ws.on('close', () => {
      if (!stdin.writableEnded) stdin.end();
    });
    void (async () => {
      let code: number;
      try {
        code = await handler(
          command,
          {
            stdin,
            stdout: (chunk) => send(Channel.Stdout, chunk),
            stderr: (chunk) => send(Channel.Stderr, chunk),
          },
          container,
        );
      } catch (err) {
        send(Channel.Stderr, `${err instanceof Error ? err.message : String(err)}\n`);
        code = 126;
      }
      send(Channel.Status, JSON.stringify(endStatus(code)));
      ws.close(1000);
    })();
  });
}
