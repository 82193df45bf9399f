/**
 * `npm run sandbox`: starts the local sandbox and keeps it running so every
 * CLI command can be tried by hand. An S3 server (in memory) holds the
 * registry's bucket, an empty vault and an empty restore target; a fake
 * cluster's ACP ModuleInfo runs a real `docker-registry` on the registry
 * bucket, with sample images pushed. It prints the `export` lines, the
 * kubeconfig, the registry URL and example commands, then waits; SIGINT
 * (Ctrl-C) or SIGTERM stops everything it started and it exits 0.
 *
 * `--json` prints one JSON object on stdout once ready (`env`, `kubeconfig`,
 * `registryUrl`, `s3Endpoint`, `buckets`, `images`, `commands`); what it says
 * meanwhile goes to stderr.
 *
 * The S3 server's port is not fixed (the sandbox helpers pick a free one each
 * start) and all state is in memory, so the printed values hold for one run.
 */
import { Command } from 'commander';
import type { PopulateOptions } from '../sandbox/images/index.ts';
import {
  ensureSandboxPackages,
  type SandboxBed,
  type Say,
  startSandboxBed,
} from './sandbox-bed.ts';

const program = new Command()
  .name('npm run sandbox --')
  .description('start the local sandbox and keep it running, to try the CLI by hand')
  .option('--images <n>', 'images to push, two tags per repository', '6')
  .option('--json', 'print the environment as one JSON object once ready', false)
  .parse();
const options = program.opts<{ images: string; json: boolean }>();

const BUCKETS = {
  registry: 'registry',
  vault: 'regvault-vault',
  target: 'registry-restored',
} as const;
/** The Secret the seeded ModuleInfo names; a restore's `--target-secret` reuses it. */
const SECRET = 'registry-s3-secret';
const MAX_IMAGES = 200;

const say: Say = (event, text, fields = {}) => {
  // With --json, stdout carries only the one ready object.
  if (options.json) process.stderr.write(`${JSON.stringify({ event, ...fields })}\n`);
  else process.stdout.write(`${text}\n`);
};

/** `count` images as repositories of two tags (one of one tag when odd); the first is multi-arch. */
function imagePlan(count: number): PopulateOptions[] {
  const pairs = Math.floor(count / 2);
  const plan: PopulateOptions[] = [];
  if (pairs > 0) plan.push({ repositories: pairs, tagsPerRepository: 2, multiArch: true });
  if (count % 2 === 1)
    plan.push({
      repositories: 1,
      tagsPerRepository: 1,
      names: [`team-${pairs}/app-${pairs}`],
      multiArch: pairs === 0,
    });
  return plan;
}

/** Quotes a value for a POSIX shell when it needs it. */
const shellQuote = (value: string) =>
  /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;

function readyReport(bed: SandboxBed, images: number) {
  const env = {
    KUBECONFIG: bed.cluster.kubeconfigPath,
    REGVAULT_VAULT_BUCKET: BUCKETS.vault,
    REGVAULT_VAULT_REGION: bed.s3.region,
    REGVAULT_VAULT_ENDPOINT: bed.s3.endpoint,
    REGVAULT_REGISTRY_URL: bed.cluster.registryUrl,
    AWS_ACCESS_KEY_ID: bed.s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: bed.s3.credentials.secretAccessKey,
  };
  const commands = [
    'npm run regvault -- backup',
    'npm run regvault -- snapshots list',
    'npm run regvault -- fsck --deep',
    `npm run regvault -- restore --snapshot latest --target-bucket ${BUCKETS.target} --target-secret ${SECRET}`,
    'npm run regvault -- verify --pull-sample all',
    'kubectl get moduleinfos -o yaml',
  ];
  return {
    env,
    kubeconfig: bed.cluster.kubeconfigPath,
    registryUrl: bed.cluster.registryUrl,
    s3Endpoint: bed.s3.endpoint,
    buckets: BUCKETS,
    images: {
      count: images,
      references: bed.images.repositories.flatMap((repository) =>
        Object.keys(repository.tags).map((tag) => `${bed.host}/${repository.name}:${tag}`),
      ),
    },
    commands,
  };
}

function printForPeople(ready: ReturnType<typeof readyReport>): void {
  const exports = Object.entries(ready.env).map(
    ([name, value]) => `export ${name}=${shellQuote(value)}`,
  );
  process.stdout.write(
    [
      '',
      'the sandbox is running; paste this into another shell in this directory:',
      '',
      ...exports,
      '',
      `kubeconfig  ${ready.kubeconfig}`,
      `registry    ${ready.registryUrl} (${ready.images.count} images, e.g. ${ready.images.references[0] ?? 'none'})`,
      `S3 server   ${ready.s3Endpoint} (any keys; in memory)`,
      `buckets     ${BUCKETS.registry} (the registry's), ${BUCKETS.vault} (the vault), ${BUCKETS.target} (empty, a restore target)`,
      '',
      'then try:',
      ...ready.commands.map((command) => `  ${command}`),
      '',
      'Ctrl-C stops the sandbox; what it holds is gone then.',
      '',
    ].join('\n'),
  );
}

/**
 * Resolves on the first SIGINT or SIGTERM. Later ones are ignored: Ctrl-C
 * reaches this process both from the terminal and relayed by npm and tsx, and
 * the stop is bounded anyway (each service is killed 5 s after SIGTERM).
 */
function untilSignalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => resolve(signal));
  });
}

async function main(): Promise<number> {
  const images = Number(options.images);
  if (!Number.isInteger(images) || images < 1 || images > MAX_IMAGES) {
    process.stderr.write(
      `--images: expected a whole number from 1 to ${MAX_IMAGES}, got ${JSON.stringify(options.images)}\n`,
    );
    return 2;
  }
  const signalled = untilSignalled();
  let running = false;
  let stopping = false;
  void signalled.then((signal) => {
    stopping = true;
    say('stop', `${signal}: stopping the sandbox${running ? '' : ' as soon as it has started'}`, {
      signal,
    });
  });
  ensureSandboxPackages('the sandbox', say, options.json);
  say(
    'sandbox',
    `starting the sandbox: S3 server, fake cluster API, registry on bucket "${BUCKETS.registry}"`,
  );
  const bed = await startSandboxBed({
    name: 'sandbox-s3',
    registryBucket: BUCKETS.registry,
    buckets: [BUCKETS.vault, BUCKETS.target],
    clusterToken: 'sandbox-token',
    images: imagePlan(images),
    beforePush: (host) => say('push', `pushing ${images} images to ${host}`, { images, host }),
  });
  try {
    running = true;
    if (!stopping) {
      const ready = readyReport(bed, images);
      if (options.json) process.stdout.write(`${JSON.stringify({ event: 'ready', ...ready })}\n`);
      else printForPeople(ready);
    }
    await signalled;
  } finally {
    await bed.stop();
  }
  say('stopped', 'the sandbox has stopped');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`sandbox failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
