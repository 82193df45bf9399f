import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { registryCredentialsOf } from '../../functions/commons/aws/secret-values.ts';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';

const TOKEN = 'tok-SECRET-6f1c2e9a';
const PASSWORD = 'pw-SECRET-90ab77';

/** The thrown error's message, or a failure when nothing was thrown. */
function thrownBy(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    return err instanceof Error ? `${err.message} ${String(err.cause ?? '')}` : String(err);
  }
  throw new Error('expected an error');
}

describe('errors about secret material never quote it', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regvault-secret-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [
      'a YAML syntax error next to the token',
      `users:\n- name: u\n  user:\n    token: ${TOKEN}\n   bad: [\n`,
    ],
    ['a tab where YAML wants spaces', `users:\n\t- token: ${TOKEN}\n`],
  ])('names the kubeconfig problem without its text: %s', (_case, yaml) => {
    // Act
    const message = thrownBy(() => loadKubeConfig({ yaml }));
    // Assess
    expect(message).toMatch(/kubeconfig/);
    expect(message).not.toContain(TOKEN);
  });

  it('names an unreadable kubeconfig file by path and error code', async () => {
    // Prepare
    const path = join(dir, 'missing-kubeconfig');
    // Act
    const message = thrownBy(() => loadKubeConfig({ path }));
    // Assess
    expect(message).toContain(path);
    expect(message).toContain('ENOENT');
  });

  it('reads a kubeconfig written to a file', async () => {
    // Prepare
    const path = join(dir, 'kubeconfig');
    await writeFile(
      path,
      [
        'apiVersion: v1',
        'clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]',
        `users: [{name: u, user: {token: ${TOKEN}}}]`,
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'current-context: x',
      ].join('\n'),
    );
    // Act
    const kc = loadKubeConfig({ path });
    // Assess
    expect(kc.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
  });

  it.each([
    ['text that is not JSON', `{"username": "ci", "password": ${PASSWORD}`],
    ['a password that is not a string', `{"username": "ci", "password": ["${PASSWORD}", 1]}`],
    ['no username', `{"password": "${PASSWORD}"}`],
  ])('rejects registry credentials with %s, naming the fix but not the value', (_case, text) => {
    // Act
    const message = thrownBy(() =>
      registryCredentialsOf(text, 'arn:aws:secretsmanager:r:1:secret:reg'),
    );
    // Assess
    expect(message).toContain('arn:aws:secretsmanager:r:1:secret:reg');
    expect(message).toMatch(/username/);
    expect(message).not.toContain(PASSWORD);
  });

  it('accepts registry credentials with a username and a password', () => {
    // Act
    const credentials = registryCredentialsOf(
      JSON.stringify({ username: 'ci', password: PASSWORD }),
      'arn',
    );
    // Assess
    expect(credentials).toEqual({ username: 'ci', password: PASSWORD });
  });
});
