/**
 * Child-process plumbing shared by every sandbox service: free loopback ports,
 * spawning with captured logs, readiness polling and a teardown that leaves no
 * process behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { pathToFileURL } from 'node:url';

/** The only address sandbox services bind to. */
export const LOOPBACK = '127.0.0.1';

/**
 * A URL where nothing answers (connection refused): a privileged port that no
 * sandbox server takes, since they all bind free ephemeral ports, and that
 * fetch does not refuse to try (it blocks 1, 9 and others as "bad ports"). A
 * port that `freePort` gave back is no such place: another test's server may
 * bind it meanwhile, and then it answers (a CI run got ECONNRESET, not refused).
 */
export const NOTHING_ANSWERS = `http://${LOOPBACK}:2`;

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') {
    throw new Error(`expected a TCP address from the kernel, got ${String(address)}`);
  }
  return address.port;
}

/** Keeps the last lines a process wrote, for error messages and `pods/log`. */
export class LogBuffer {
  readonly #lines: string[] = [];
  #partial = '';
  readonly #limit: number;

  constructor(limit = 5_000) {
    this.#limit = limit;
  }

  /** Appends a chunk of process output, splitting it into lines. */
  push(chunk: Buffer | string): void {
    const text = this.#partial + chunk.toString();
    const parts = text.split('\n');
    this.#partial = parts.pop() ?? '';
    for (const line of parts) this.#append(line);
  }

  #append(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > this.#limit) this.#lines.splice(0, this.#lines.length - this.#limit);
  }

  /** All retained lines (the last `tail` when given), including an unterminated last line. */
  lines(tail?: number): string[] {
    const all = this.#partial === '' ? [...this.#lines] : [...this.#lines, this.#partial];
    return tail === undefined ? all : all.slice(-tail);
  }

  text(tail?: number): string {
    return this.lines(tail).join('\n');
  }
}

export interface ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logs: LogBuffer;
  /** Resolves when the process has exited (with its code or signal). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True until the process exits. */
  running(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Environment variables removed from the child's environment. */
  readonly unsetEnv?: readonly string[];
  readonly cwd?: string;
}

const live = new Set<ManagedProcess>();

/**
 * util-linux's setpriv (in every Debian) sets the kernel's parent-death
 * signal and then execs the command, so a service whose test process
 * crashes or is killed is sent SIGTERM instead of living on as an orphan.
 */
const SETPRIV = '/usr/bin/setpriv';
const dieWithParent = existsSync(SETPRIV);

/** True while a process with this pid exists (a zombie counts as gone). */
export function processExists(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== undefined && state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** Spawns a long-running child with stdout and stderr captured into one log. */
export function spawnManaged(options: SpawnOptions): ManagedProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env };
  for (const key of options.unsetEnv ?? []) delete env[key];
  const [command, args] = dieWithParent
    ? [SETPRIV, ['--pdeathsig', 'TERM', '--', options.command, ...options.args]]
    : [options.command, [...options.args]];
  const child = spawn(command, args, {
    env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs = new LogBuffer();
  child.stdout?.on('data', (chunk: Buffer) => logs.push(chunk));
  child.stderr?.on('data', (chunk: Buffer) => logs.push(chunk));
  let alive = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
    child.once('error', (err) => {
      alive = false;
      logs.push(`spawn error: ${err.message}\n`);
      resolve({ code: null, signal: null });
    });
  });
  const managed: ManagedProcess = {
    name: options.name,
    child,
    logs,
    exited,
    running: () => alive,
    async stop(graceMs = 5_000) {
      if (alive) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      live.delete(managed);
    },
  };
  live.add(managed);
  void exited.then(() => live.delete(managed));
  return managed;
}

/** Processes started by this module that are still running (a teardown check). */
export function liveProcesses(): readonly ManagedProcess[] {
  return [...live];
}

export interface WaitOptions {
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  /** Stop waiting early (and fail) when this process exits. */
  readonly process?: ManagedProcess;
}

/**
 * Polls `probe` until it returns true. Fails with `what` and the process's last
 * log lines when the time runs out or the process dies first.
 */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  options: WaitOptions = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  const interval = options.intervalMs ?? 100;
  let lastError = '';
  while (Date.now() < deadline) {
    if (options.process !== undefined && !options.process.running()) {
      throw new Error(
        `${what}: ${options.process.name} exited before it was ready; last output:\n${options.process.logs.text(30)}`,
      );
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
  const tail =
    options.process === undefined ? '' : `\nlast output:\n${options.process.logs.text(30)}`;
  throw new Error(
    `${what}: not ready after ${options.timeoutMs ?? 30_000} ms${lastError === '' ? '' : ` (last error: ${lastError})`}${tail}`,
  );
}

/** True when an HTTP GET of `url` answers with a status below 500 (any answer at all). */
export async function httpAnswers(url: string): Promise<boolean> {
  const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.status < 500;
}

/** True when something accepts TCP connections on the port. */
export async function portInUse(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect({ host: LOOPBACK, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * The command that runs one of our TypeScript entry files in a child Node
 * process: the same Node binary as this process, with tsx's loader.
 */
export function typeScriptCommand(entryFile: string): { command: string; args: string[] } {
  const require = createRequire(import.meta.url);
  const loader = pathToFileURL(require.resolve('tsx')).href;
  return {
    command: process.execPath,
    args: ['--import', loader, '--no-warnings=ExperimentalWarning', entryFile],
  };
}
