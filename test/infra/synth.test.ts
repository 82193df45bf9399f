import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';

const run = promisify(execFile);
const outdir = mkdtempSync(join(tmpdir(), 'regvault-synth-'));

afterAll(() => rmSync(outdir, { recursive: true, force: true }));

/** The environment of a machine with no AWS account, no Docker and no network use by the CLI. */
function offlineEnv(): NodeJS.ProcessEnv {
  const {
    AWS_PROFILE: _profile,
    AWS_ACCESS_KEY_ID: _key,
    AWS_SECRET_ACCESS_KEY: _secret,
    ...rest
  } = process.env;
  return {
    ...rest,
    // The Node that runs this test (npm's Node 22) runs the CLI, tsx and esbuild too.
    PATH: [
      dirname(process.execPath),
      join(PROJECT_ROOT, 'node_modules', '.bin'),
      process.env['PATH'] ?? '',
    ].join(delimiter),
    AWS_EC2_METADATA_DISABLED: 'true',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
    CDK_DISABLE_VERSION_CHECK: 'true',
  };
}

type Template = {
  Resources: Record<string, { Type: string; Properties: { Code?: { S3Key?: unknown } } }>;
};

/** The bundle directory of each function in the synthesised template. */
function bundlesOf(template: Template): string[] {
  return Object.values(template.Resources)
    .filter((resource) => resource.Type === 'AWS::Lambda::Function')
    .map((fn) => join(outdir, `asset.${String(fn.Properties.Code?.S3Key).replace(/\.zip$/, '')}`));
}

describe('cdk synth', () => {
  let synth: { stderr: string } | Error;

  // One real synth (about a minute: sixteen esbuild bundles) shared by the tests below.
  beforeAll(async () => {
    const cli = join(PROJECT_ROOT, 'node_modules', 'aws-cdk', 'bin', 'cdk');
    synth = await run(
      process.execPath,
      [cli, 'synth', '--quiet', '--no-notices', '--output', outdir],
      {
        cwd: PROJECT_ROOT,
        env: offlineEnv(),
        maxBuffer: 64 * 1024 * 1024,
        timeout: 540_000,
      },
    ).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  }, 600_000);

  it('synthesises the app offline with the local esbuild, cdk-nag passing, one bundle per function', () => {
    // Prepare
    if (synth instanceof Error) throw synth;

    // Act
    const template = JSON.parse(
      readFileSync(join(outdir, 'Regvault.template.json'), 'utf8'),
    ) as Template;
    const bundles = bundlesOf(template);

    // Assess
    expect(synth.stderr).not.toMatch(/docker/i);
    expect(bundles).toHaveLength(Object.keys(FUNCTIONS).length);
    for (const bundle of bundles) expect(existsSync(join(bundle, 'index.mjs'))).toBe(true);
    // node:http comes through scripts/node-http.mjs, never as an ES module (40 ms of a cold start).
    for (const bundle of bundles)
      expect(readFileSync(join(bundle, 'index.mjs'), 'utf8')).not.toMatch(
        /from\s*["'](node:)?http["']/,
      );
  });

  it('gives every function an ESM bundle that Node 22 loads, exporting its handler', async () => {
    // Prepare
    if (synth instanceof Error) throw synth;
    const template = JSON.parse(
      readFileSync(join(outdir, 'Regvault.template.json'), 'utf8'),
    ) as Template;
    const files = bundlesOf(template).map((bundle) => join(bundle, 'index.mjs'));
    // Importing runs each bundle's top level (SDK clients, Powertools); no call leaves the process.
    const script = `for (const file of ${JSON.stringify(files)}) { const m = await import(file); console.log(typeof m.handler); }`;

    // Act
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...offlineEnv(), VAULT_BUCKET: 'vault-bucket', AWS_REGION: 'eu-west-1' },
      timeout: 120_000,
    });

    // Assess
    expect(files).toHaveLength(Object.keys(FUNCTIONS).length);
    expect(stdout.trim().split('\n')).toEqual(files.map(() => 'function'));
  }, 180_000);
});
