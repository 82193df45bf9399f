/**
 * regvault's side of pods/exec (functions/commons/cluster/exec.ts), against
 * the fake apiserver: a command's output read at the reader's pace without
 * piling up (the socket is paused while the reader is behind), its failure
 * with its exit status and stderr, and a refused exec naming the RBAC rule.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runInPod } from '../../functions/commons/cluster/exec.ts';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import type { KubeApiServer } from '../../sandbox/kube/index.ts';
import { apiWithPod } from './support.ts';

const NS = 'quay-enterprise';
const POD = 'dumper';
const TOKEN = 'exec-stream-token';
/** What the pod's command writes: 48 MiB in 256 KiB pieces, as fast as it can. */
const PIECE = Buffer.alloc(256 * 1024, 7);
const PIECES = 192;

let api: KubeApiServer;
let dir: string;
let kubeconfig: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'exec-stream-'));
  ({ api, kubeconfig: kubeconfig } = await apiWithPod(dir, TOKEN, NS, POD));
  api.setPodExec(NS, POD, async ([program], io) => {
    if (program === 'fail') {
      io.stdout('partial\n');
      io.stderr('pg_dump: error: connection lost\n');
      return 1;
    }
    for (let i = 0; i < PIECES; i++) io.stdout(PIECE);
    return 0;
  });
}, 60_000);

afterAll(async () => {
  await api?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const target = { namespace: NS, pod: POD, container: 'postgres' };

describe('runInPod', () => {
  it('hands a slow reader the whole output without holding more than a few MiB of it', async () => {
    // Prepare
    const run = runInPod(loadKubeConfig({ path: kubeconfig }), target, ['dump']);
    const hash = createHash('sha256');
    let bytes = 0;
    let held = 0;

    // Act
    for await (const chunk of run.stdout) {
      // A read takes all that is buffered: its size is what the stream held.
      held = Math.max(held, (chunk as Buffer).byteLength + run.stdout.readableLength);
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).byteLength;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await run.finished;

    // Assess
    const expected = createHash('sha256');
    for (let i = 0; i < PIECES; i++) expected.update(PIECE);
    expect(bytes).toBe(PIECE.byteLength * PIECES);
    expect(hash.digest('hex')).toBe(expected.digest('hex'));
    // Measured: about 1.3 MiB with the socket paused, 15 MiB and growing without.
    expect(held).toBeLessThan(8 * 1024 * 1024);
  });

  it('fails with the exit status and the end of stderr when the command fails', async () => {
    // Act
    const run = runInPod(loadKubeConfig({ path: kubeconfig }), target, ['fail']);
    // The output fails with the command, so a reader of a failed dump never takes it as whole.
    const read = (async () => {
      for await (const _chunk of run.stdout);
    })();

    // Assess
    await expect(run.finished).rejects.toThrow(
      /fail in pod quay-enterprise\/dumper failed: .*exit status 1.*pg_dump: error: connection lost/s,
    );
    await expect(read).rejects.toThrow(/exit status 1/);
  });

  it('names the RBAC rule when the exec is refused', async () => {
    // Prepare
    api.setForbidden([{ verb: 'create', resource: 'pods/exec', namespace: NS }]);

    // Act
    const run = runInPod(loadKubeConfig({ path: kubeconfig }), target, ['dump']);
    run.stdout.on('error', () => undefined);

    // Assess
    await expect(run.finished).rejects.toThrow(
      /refused to exec into pod quay-enterprise\/dumper[\s\S]*pods\/exec/,
    );
    api.setForbidden([]);
  });
});
