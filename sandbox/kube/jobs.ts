/**
 * The sandbox's Job controller and kubelet for `batch/v1` Jobs: each new Job
 * runs its pod template's first container as a local process, with the
 * container's env (values, and `secretKeyRef`s read from the store's
 * Secrets) and nothing else but PATH and HOME, and each volume that is a
 * PersistentVolumeClaim mapped to the directory the sandbox keeps for that
 * claim: an argument naming a mount path (or a path below it) is rewritten to
 * the directory. A container whose command is `regvault` runs this
 * repository's CLI from source. The Job's status says active, then
 * succeeded or failed with a Complete or Failed condition, as the real
 * controller writes it; `kubectl get jobs` reads it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { typeScriptCommand } from '../process.ts';
import { BuiltIn } from './resources.ts';
import type { KubeApiServer } from './server.ts';
import type { KubeObject, StoreEvent } from './store.ts';

export interface JobControllerOptions {
  readonly server: KubeApiServer;
  /** The directory a claim stands for, or undefined when the claim does not exist. */
  readonly claimDirectory: (namespace: string, claimName: string) => string | undefined;
}

export interface JobController {
  /** The output (stdout then stderr) of the Job's process so far, by `namespace/name`. */
  logs(namespace: string, name: string): string;
  stop(): Promise<void>;
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);
const strings = (value: unknown): string[] =>
  list(value).filter((v): v is string => typeof v === 'string');
const timestamp = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

const CLI = fileURLToPath(new URL('../../bin/regvault.ts', import.meta.url));

/** How a Job's container is run here, or why it cannot be. */
type Launch =
  | { ok: true; command: string; args: string[]; env: Record<string, string> }
  | { ok: false; reason: string; message: string };

/** Starts the controller: Jobs created from now on run once each. */
export function startJobController(options: JobControllerOptions): JobController {
  const { store } = options.server;
  const running = new Map<string, ChildProcess>();
  const output = new Map<string, string[]>();

  function launchOf(job: KubeObject): Launch {
    const namespace = job.metadata.namespace ?? 'default';
    const pod = record(record(record(job['spec'])['template'])['spec']);
    const container = record(list(pod['containers'])[0]);
    const argv = [...strings(container['command']), ...strings(container['args'])];
    if (argv.length === 0)
      return { ok: false, reason: 'NoCommand', message: 'the container has no command' };
    const volumes = new Map<string, string>();
    for (const volume of list(pod['volumes']).map(record)) {
      const claimName = record(volume['persistentVolumeClaim'])['claimName'];
      if (typeof claimName !== 'string') continue;
      const directory = options.claimDirectory(namespace, claimName);
      if (directory === undefined)
        return {
          ok: false,
          reason: 'FailedMount',
          message: `persistentvolumeclaim "${claimName}" not found`,
        };
      volumes.set(String(volume['name']), directory);
    }
    const mounts = list(container['volumeMounts'])
      .map(record)
      .flatMap((mount) => {
        const directory = volumes.get(String(mount['name']));
        return directory === undefined ? [] : [{ path: String(mount['mountPath']), directory }];
      });
    const mapped = argv.map((arg) => {
      const mount = mounts.find((m) => arg === m.path || arg.startsWith(`${m.path}/`));
      return mount === undefined ? arg : `${mount.directory}${arg.slice(mount.path.length)}`;
    });
    const env: Record<string, string> = {};
    for (const variable of list(container['env']).map(record)) {
      const name = String(variable['name']);
      if (typeof variable['value'] === 'string') {
        env[name] = variable['value'];
        continue;
      }
      const ref = record(record(variable['valueFrom'])['secretKeyRef']);
      const secret = store.get(BuiltIn.secrets, namespace, String(ref['name']));
      const value = record(secret?.['data'])[String(ref['key'])];
      if (typeof value !== 'string')
        return {
          ok: false,
          reason: 'CreateContainerConfigError',
          message: `secret "${String(ref['name'])}" has no key "${String(ref['key'])}"`,
        };
      env[name] = Buffer.from(value, 'base64').toString('utf8');
    }
    const [command = '', ...args] = mapped;
    if (command === 'regvault') {
      const cli = typeScriptCommand(CLI);
      return { ok: true, command: cli.command, args: [...cli.args, ...args], env };
    }
    return { ok: true, command, args, env };
  }

  function setStatus(job: KubeObject, status: Record<string, unknown>): void {
    const current = store.get(BuiltIn.jobs, job.metadata.namespace, job.metadata.name);
    if (current === undefined) return; // deleted meanwhile
    store.replace(BuiltIn.jobs, {
      ...current,
      status: { ...record(current['status']), ...status },
    });
  }

  function finish(job: KubeObject, succeeded: boolean, reason: string, message: string): void {
    setStatus(job, {
      active: 0,
      ...(succeeded ? { succeeded: 1, completionTime: timestamp() } : { failed: 1 }),
      conditions: [
        {
          type: succeeded ? 'Complete' : 'Failed',
          status: 'True',
          reason,
          message,
          lastProbeTime: timestamp(),
          lastTransitionTime: timestamp(),
        },
      ],
    });
  }

  function run(job: KubeObject): void {
    const key = `${job.metadata.namespace}/${job.metadata.name}`;
    const launch = launchOf(job);
    if (!launch.ok) {
      finish(job, false, launch.reason, launch.message);
      return;
    }
    setStatus(job, { active: 1, startTime: timestamp() });
    const lines: string[] = [];
    output.set(key, lines);
    const child = spawn(launch.command, launch.args, {
      env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '', ...launch.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    running.set(key, child);
    child.stdout?.on('data', (chunk: Buffer) => lines.push(chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => lines.push(chunk.toString()));
    child.on('close', (code) => {
      running.delete(key);
      if (code === 0) finish(job, true, 'Completed', 'the container exited 0');
      else
        finish(job, false, 'BackoffLimitExceeded', `the container exited ${code ?? 'on a signal'}`);
    });
  }

  const unsubscribe = store.watch((event: StoreEvent) => {
    if (event.ref.group !== 'batch' || event.ref.resource !== 'jobs') return;
    const key = `${event.object.metadata.namespace}/${event.object.metadata.name}`;
    if (event.type === 'ADDED') queueMicrotask(() => run(event.object));
    if (event.type === 'DELETED') running.get(key)?.kill('SIGTERM');
  });

  return {
    logs: (namespace, name) => (output.get(`${namespace}/${name}`) ?? []).join(''),
    async stop() {
      unsubscribe();
      await Promise.all(
        [...running.values()].map(
          (child) =>
            new Promise<void>((resolve) => {
              child.once('close', () => resolve());
              child.kill('SIGTERM');
            }),
        ),
      );
    },
  };
}
