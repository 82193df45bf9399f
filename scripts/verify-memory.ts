/**
 * Measures the memory and speed of a verification that fully pulls an image
 * with one large layer (1 GiB by default): starts the sandbox S3 server and a
 * `docker-registry` on it, pushes the image with skopeo, then runs
 * `verifyRegistry` with every image pulled (sample "all") in a child process
 * (scripts/verify-rss.ts) and prints that child's peak RSS and the MiB/s its
 * pull hashed. Exits 1 when a run fails or peaks over the limit.
 *
 *   npx tsx scripts/verify-memory.ts [--layer-mib 1024] [--runs 3] [--limit-mib 300] [--json]
 */
import { execFile } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../functions/commons/s3/client.ts';
import { OCI_MANIFEST, OciLayout, pushImage } from '../sandbox/images/index.ts';
import { typeScriptCommand } from '../sandbox/process.ts';
import { startRegistry } from '../sandbox/registry/index.ts';
import { startS3Server } from '../sandbox/s3/index.ts';
import type { RssResult } from './verify-rss.ts';

const run = promisify(execFile);
const MiB = 1024 ** 2;
const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/**
 * Writes a gzip'd layer of `size` pseudo-random bytes (an AES-CTR keystream,
 * cheap to make) into the layout as a stream, hashing as it goes, so nothing
 * holds it whole. Gzip level 0 only frames the bytes: fast, and skopeo pushes
 * a compressed layer as it is (it would compress an uncompressed one,
 * changing its digest). The bytes are opaque: nothing looks inside a layer.
 */
async function writeLayer(
  layout: OciLayout,
  size: number,
): Promise<{ digest: string; size: number; diffId: string }> {
  const temporary = join(layout.directory, 'blobs', 'layer.partial');
  const keystream = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16));
  const uncompressed = createHash('sha256');
  const compressed = createHash('sha256');
  let written = 0;
  async function* plain() {
    const zeros = Buffer.alloc(8 * MiB);
    for (let made = 0; made < size; ) {
      const chunk = keystream.update(zeros.subarray(0, Math.min(zeros.length, size - made)));
      uncompressed.update(chunk);
      made += chunk.length;
      yield chunk;
    }
  }
  async function* counted(source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      compressed.update(chunk);
      written += chunk.length;
      yield chunk;
    }
  }
  await pipeline(plain, createGzip({ level: 0 }), counted, createWriteStream(temporary));
  const digest = `sha256:${compressed.digest('hex')}`;
  await rename(temporary, join(layout.directory, 'blobs', 'sha256', digest.slice(7)));
  return { digest, size: written, diffId: `sha256:${uncompressed.digest('hex')}` };
}

/** Adds a one-layer image under `ref` whose layer is `size` bytes. */
async function addLargeImage(layout: OciLayout, ref: string, size: number): Promise<string> {
  const layer = await writeLayer(layout, size);
  const blob = async (document: object) => {
    const data = Buffer.from(JSON.stringify(document));
    const digest = sha256(data);
    await writeFile(join(layout.directory, 'blobs', 'sha256', digest.slice(7)), data);
    return { digest, size: data.length };
  };
  const config = await blob({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
  });
  const manifest = await blob({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [
      {
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: layer.digest,
        size: layer.size,
      },
    ],
  });
  await writeFile(
    join(layout.directory, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': ref },
        },
      ],
    }),
  );
  return manifest.digest;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'layer-mib': { type: 'string', default: '1024' },
      runs: { type: 'string', default: '3' },
      'limit-mib': { type: 'string', default: '300' },
      json: { type: 'boolean', default: false },
    },
  });
  const layerBytes = Number(values['layer-mib']) * MiB;
  const runs = Number(values.runs);
  const limit = Number(values['limit-mib']) * MiB;
  const say = (line: string) => {
    if (!values.json) process.stdout.write(`${line}\n`);
  };

  const s3 = await startS3Server({ name: 's3-verify-memory' });
  const layout = await OciLayout.create();
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  try {
    const s3Client = createS3Client(
      { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
      s3.credentials,
    );
    await s3Client.send(new CreateBucketCommand({ Bucket: 'verify-memory' }));
    s3Client.destroy();
    // The sandbox registry writes to S3 in 5 MiB parts (this S3 server refuses requests over ~11 MiB).
    registry = await startRegistry({
      storage: {
        kind: 's3',
        bucket: 'verify-memory',
        endpoint: s3.endpoint,
        region: s3.region,
        accessKey: s3.credentials.accessKeyId,
        secretKey: s3.credentials.secretAccessKey,
      },
    });
    let started = performance.now();
    const digest = await addLargeImage(layout, 'large', layerBytes);
    say(
      `built a ${layerBytes / MiB} MiB layer in ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    started = performance.now();
    await pushImage(layout, 'large', `${registry.host}/measure/large:v1`);
    say(`pushed measure/large:v1 in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    const child = typeScriptCommand(fileURLToPath(new URL('./verify-rss.ts', import.meta.url)));
    const job = {
      registryUrl: registry.url,
      expected: { repositories: [{ name: 'measure/large', tags: { v1: digest } }] },
      sample: 'all',
    };
    const results: RssResult[] = [];
    for (let i = 0; i < runs; i++) {
      const { stdout } = await run(child.command, [...child.args, JSON.stringify(job)], {
        timeout: 30 * 60_000,
      });
      const result = JSON.parse(stdout) as RssResult;
      results.push(result);
      say(
        `run ${i + 1}: ${result.ok ? 'ok' : `FAILED: ${result.problems.join('; ')}`}, ` +
          `${(result.hashedBytes / MiB).toFixed(0)} MiB hashed in ${result.seconds.toFixed(1)} s ` +
          `(${(result.hashedBytes / MiB / result.seconds).toFixed(0)} MiB/s), ` +
          `peak RSS ${(result.maxRss / MiB).toFixed(0)} MiB ` +
          `(before verifying ${(result.rssBefore / MiB).toFixed(0)} MiB, highest sampled while verifying ${(result.rssSampledPeak / MiB).toFixed(0)} MiB)`,
      );
    }
    const peak = Math.max(...results.map((r) => r.maxRss));
    const ok = results.every((r) => r.ok && r.hashedBytes >= layerBytes) && peak <= limit;
    say(
      `${ok ? 'PASS' : 'FAIL'}: peak RSS ${(peak / MiB).toFixed(0)} MiB over ${runs} runs (limit ${limit / MiB} MiB)`,
    );
    if (values.json) {
      process.stdout.write(
        `${JSON.stringify({ ok, layerBytes, limitBytes: limit, peakRss: peak, runs: results })}\n`,
      );
    }
    if (!ok) process.exitCode = 1;
  } finally {
    await registry?.stop();
    await s3.stop();
    await layout.remove();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
