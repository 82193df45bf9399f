/**
 * Commands run in a pod through `pods/exec` (client-node's Exec, the
 * WebSocket remote-command protocol kubectl speaks): a command's output as a
 * stream read at the reader's pace (a database dump into the vault: no local
 * file, the socket paused while the reader is behind), or as text; input
 * streamed in. A refused exec says which RBAC rule is missing; a command that
 * fails says its exit code and the end of its stderr.
 */
import { PassThrough, type Readable, Writable } from 'node:stream';
import { Exec, type KubeConfig, type V1Status } from '@kubernetes/client-node';
import { ClusterError } from '../errors.ts';
import { type CallDescription, KubeApiError, rbacRuleFor } from './kube.ts';

/** Where a command runs. */
export interface PodTarget {
  readonly namespace: string;
  readonly pod: string;
  readonly container?: string;
}

/**
 * A running command: its stdout, and its end (rejects when it fails). When
 * the command fails, `stdout` fails too (an 'error' event), so a reader
 * streaming it somewhere (a dump into the vault) never takes a cut output as
 * whole: read it, or listen for its 'error'.
 */
export interface PodCommand {
  readonly stdout: Readable;
  readonly finished: Promise<void>;
}

/** How much of a failed command's stderr goes into the error. */
const STDERR_CHARS = 800;

interface PausableSocket {
  pause?: () => void;
  resume?: () => void;
  close?: () => void;
}

/** Runs `command` in the pod; `stdin`, when given, is streamed to it. */
export function runInPod(
  kc: KubeConfig,
  target: PodTarget,
  command: readonly string[],
  stdin?: Readable,
): PodCommand {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  let socket: PausableSocket | undefined;
  let paused = false;
  // Exec writes without waiting: the socket is paused while the reader is behind.
  const stdout = new Writable({
    write(chunk: Buffer, _encoding, done) {
      if (!out.write(chunk) && socket?.pause !== undefined && !paused) {
        paused = true;
        socket.pause();
        out.once('drain', () => {
          paused = false;
          socket?.resume?.();
        });
      }
      done();
    },
  });
  let stderr = '';
  const errors = new Writable({
    write(chunk: Buffer, _encoding, done) {
      stderr = `${stderr}${chunk.toString('utf8')}`.slice(-STDERR_CHARS);
      done();
    },
  });
  const where = `pod ${target.namespace}/${target.pod}`;
  const what = command.slice(0, 2).join(' ');
  const finished = new Promise<void>((resolve, reject) => {
    let status: V1Status | undefined;
    new Exec(kc)
      .exec(
        target.namespace,
        target.pod,
        target.container ?? '',
        [...command],
        stdout,
        errors,
        stdin ?? null,
        false,
        (s) => {
          status = s;
        },
      )
      .then((ws) => {
        socket = ws as unknown as PausableSocket;
        ws.on('close', () => {
          if (status?.status === 'Success') resolve();
          else
            reject(
              new ClusterError(
                status === undefined
                  ? `${what} in ${where} ended without an exit status (the connection to ${server} closed)`
                  : `${what} in ${where} failed: ${status.message ?? status.reason ?? 'no message'}${stderr.trim() === '' ? '' : `; its stderr ends: ${stderr.trim()}`}`,
              ),
            );
        });
      })
      .catch((err: unknown) => reject(refusal(server, target, err)));
  });
  // The output ends with the command; a failure reaches whoever reads it or awaits `finished`.
  finished.then(
    () => out.end(),
    (err: unknown) => out.destroy(err as Error),
  );
  return { stdout: out, finished };
}

/** Runs `command` and returns its stdout as text (small outputs: a config file). */
export async function podText(
  kc: KubeConfig,
  target: PodTarget,
  command: readonly string[],
): Promise<string> {
  const run = runInPod(kc, target, command);
  const chunks: Buffer[] = [];
  const reading = (async () => {
    for await (const chunk of run.stdout) chunks.push(chunk as Buffer);
  })();
  await Promise.all([run.finished, reading]);
  return Buffer.concat(chunks).toString('utf8');
}

/** An exec the server would not start, in words that name the fix. */
function refusal(server: string, target: PodTarget, err: unknown): Error {
  // ws reports a refused upgrade as an event whose `message` says the status.
  const text =
    typeof err === 'object' && err !== null && typeof Reflect.get(err, 'message') === 'string'
      ? String(Reflect.get(err, 'message'))
      : String(err);
  const code = Number(/\b([1-5]\d\d)\b/.exec(text)?.[1] ?? Number.NaN);
  const call: CallDescription = {
    verb: 'create',
    resource: 'pods',
    subresource: 'exec',
    group: '',
    namespace: target.namespace,
    name: target.pod,
  };
  if (code === 403)
    return new KubeApiError(
      `the API server at ${server} refused to exec into pod ${target.namespace}/${target.pod}. Grant regvault's identity this rule:\n${rbacRuleFor(call)}`,
      403,
      'Forbidden',
      { cause: err },
    );
  if (code === 404)
    return new KubeApiError(
      `pod ${target.namespace}/${target.pod} was not found at ${server} to exec into`,
      404,
      'NotFound',
      { cause: err },
    );
  return new KubeApiError(
    `could not exec into pod ${target.namespace}/${target.pod} at ${server}: ${text}`,
    Number.isNaN(code) ? undefined : code,
    undefined,
    { cause: err },
  );
}
