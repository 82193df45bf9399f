/**
 * A backup through the real workflow, with every S3 request of the run going
 * through a fault proxy (sandbox/s3/fault-proxy.ts) that answers 5% of them
 * 503 SlowDown and resets 1% before forwarding, 1% after the server acted and
 * 1% in the middle of the body: the snapshot completes, its inventory equals
 * the source's listing (keys and sizes), nothing is lost, and the retries are
 * in the manifest. Once server-side (vault and source on one endpoint with
 * one set of keys) and once streaming between two S3 server processes. Each
 * faulted run is timed against a fault-free run of the same data
 * (docs/reliability.md).
 *
 * Size: REGVAULT_FAULT_REPOSITORIES repositories of 3 tags (11 objects an
 * image); `npm run test:faults` runs 165 (5,115 objects), the main suite a
 * smaller bucket.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { readInventory, readManifest } from '../../functions/commons/vault/store.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type FaultProxy, type FaultRates, startFaultProxy } from '../../sandbox/s3/fault-proxy.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, vaultDeps } from '../support/s3.ts';

const REPOSITORIES = Number(process.env['REGVAULT_FAULT_REPOSITORIES'] ?? '40');

/** 5% 503 SlowDown, and 1% of each kind of reset. */
const FAULTS: FaultRates = {
  slowDown: 0.05,
  resetBefore: 0.01,
  resetAfter: 0.01,
  resetMidBody: 0.01,
};

let near: S3ServerHandle;
let far: S3ServerHandle;
let nearProxy: FaultProxy;
let farProxy: FaultProxy;
const clients: S3Client[] = [];
let dataset: Dataset;
/** What each run saw, printed at the end for docs/reliability.md. */
const seen: Record<string, unknown> = {};

beforeAll(async () => {
  [near, far] = await Promise.all([
    startS3Server({ name: 's3-faults-near' }),
    startS3Server({ name: 's3-faults-far' }),
  ]);
  [nearProxy, farProxy] = await Promise.all([
    startFaultProxy({ upstream: near.endpoint, seed: 11 }),
    startFaultProxy({ upstream: far.endpoint, seed: 12 }),
  ]);
  dataset = buildDataset({
    repositories: REPOSITORIES,
    tagsPerRepository: 3,
    layersPerImage: 3,
    layerSize: 2048,
    seed: 18,
  });
  // The data is written straight to the servers: only the backup meets faults.
  const nearClient = clientFor(near);
  const farClient = clientFor(far);
  clients.push(nearClient, farClient);
  await createBucket(nearClient, 'registry');
  await createBucket(farClient, 'registry');
  await createBucket(nearClient, 'vault');
  const small = buildDataset({ repositories: 3, tagsPerRepository: 2, layerSize: 1024, seed: 3 });
  await createBucket(nearClient, 'warm-up');
  await Promise.all([
    writeDataset(nearClient, 'registry', dataset.objects),
    writeDataset(farClient, 'registry', dataset.objects),
    writeDataset(nearClient, 'warm-up', small.objects),
  ]);
  // A first backup pays for loading and compiling the code: not one of the timed runs.
  const warmUp = vaultDeps(near, 'vault', 'warm-up/');
  try {
    await runBackupLocally(
      { source: { bucket: 'warm-up', region: near.region, endpoint: near.endpoint } },
      { deps: warmUp },
    );
  } finally {
    warmUp.close();
  }
}, 180_000);

afterAll(async () => {
  process.stdout.write(`fault runs: ${JSON.stringify(seen, null, 2)}\n`);
  for (const client of clients) client.destroy();
  await Promise.all([nearProxy?.stop(), farProxy?.stop()]);
  await Promise.all([near?.stop(), far?.stop()]);
});

/** Backs up the registry bucket behind `sourceProxy` into a new vault at `prefix` (behind the near proxy); the run and its time. */
async function backUp(sourceProxy: FaultProxy, server: S3ServerHandle, prefix: string) {
  const deps = vaultDeps({ ...near, endpoint: nearProxy.endpoint }, 'vault', prefix, {
    concurrency: 32,
  });
  try {
    const started = performance.now();
    const result = await runBackupLocally(
      { source: { bucket: 'registry', region: server.region, endpoint: sourceProxy.endpoint } },
      { deps },
    );
    const seconds = (performance.now() - started) / 1000;
    const output = result.output as { snapshotId?: string; status?: string } | undefined;
    const manifest =
      output?.snapshotId === undefined
        ? undefined
        : await readManifest(deps.vault, output.snapshotId);
    const inventory = manifest === undefined ? [] : await readInventory(deps.vault, manifest);
    return { result, output, manifest, inventory, seconds };
  } finally {
    deps.close();
  }
}

const faultsOf = (...proxies: FaultProxy[]) => {
  const sum = { requests: 0, slowDown: 0, resetBefore: 0, resetAfter: 0, resetMidBody: 0 };
  for (const proxy of proxies) {
    const { requests, injected } = proxy.counts();
    sum.requests += requests;
    sum.slowDown += injected.slowDown;
    sum.resetBefore += injected.resetBefore;
    sum.resetAfter += injected.resetAfter;
    sum.resetMidBody += injected.resetMidBody;
  }
  return sum;
};

describe.each([
  { mode: 'server-side', vault: 'same', source: () => ({ proxy: nearProxy, server: near }) },
  {
    mode: 'streaming across two endpoints',
    vault: 'other',
    source: () => ({ proxy: farProxy, server: far }),
  },
])('a backup under 5% 503 SlowDown and 1% of each reset ($mode)', ({ mode, vault, source }) => {
  it('completes with an inventory equal to the source and no object lost', async () => {
    // Prepare: a fault-free run of the same data, for the time it costs
    const { proxy, server } = source();
    const clean = await backUp(proxy, server, `${vault}-clean/`);
    expect(clean.result.cause).toBeUndefined();
    const lister = clientFor(server);
    clients.push(lister);
    const listed = await listAll(lister, 'registry');
    for (const p of [nearProxy, farProxy]) p.setRates(FAULTS);
    const before = faultsOf(nearProxy, farProxy);
    // Act
    const faulted = await backUp(proxy, server, `${vault}-faults/`);
    for (const p of [nearProxy, farProxy]) p.setRates({});
    // Assess
    const after = faultsOf(nearProxy, farProxy);
    const injected = {
      requests: after.requests - before.requests,
      slowDown: after.slowDown - before.slowDown,
      resetBefore: after.resetBefore - before.resetBefore,
      resetAfter: after.resetAfter - before.resetAfter,
      resetMidBody: after.resetMidBody - before.resetMidBody,
    };
    seen[mode] = {
      objects: listed.size,
      cleanSeconds: Number(clean.seconds.toFixed(1)),
      faultedSeconds: Number(faulted.seconds.toFixed(1)),
      injected,
      retries: faulted.manifest?.totals.retries,
      failed: faulted.manifest?.totals.failed,
    };
    expect(faulted.result.cause).toBeUndefined();
    expect(faulted.output?.status).toBe('complete');
    expect(faulted.manifest?.status).toBe('complete');
    const inventory = new Map(faulted.inventory.map((r) => [r.key, r.size]));
    const expected = new Map([...listed].map(([key, { size }]) => [key, size]));
    expect(inventory.size).toBe(expected.size);
    expect(inventory).toEqual(expected);
    expect(faulted.manifest?.totals.failed).toBe(0);
    // Every kind of fault was met, and the copy's retries are on record.
    expect(injected.slowDown).toBeGreaterThan(0);
    expect(injected.resetBefore).toBeGreaterThan(0);
    expect(injected.resetAfter).toBeGreaterThan(0);
    expect(injected.resetMidBody).toBeGreaterThan(0);
    expect(faulted.manifest?.totals.retries ?? 0).toBeGreaterThan(0);
    expect(clean.manifest?.totals.retries).toBe(0);
  }, 300_000);
});
