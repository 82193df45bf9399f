/**
 * Proving a registry serves what a snapshot holds: ping, the full catalog,
 * every repository's tags, a manifest HEAD per tag compared with the recorded
 * digest, full pulls of sampled images with every sha256 checked, and an
 * optional push test. The report names what matched and what differed.
 */
import PQueue from 'p-queue';
import { messageOf } from '../errors.ts';
import type { RegistryClient } from './client.ts';

/** What a snapshot says the registry holds: repository -> tag -> manifest digest. */
export interface ExpectedRegistry {
  readonly repositories: ReadonlyArray<{
    readonly name: string;
    readonly tags: Readonly<Record<string, string>>;
  }>;
}

export interface VerifyOptions {
  /** Images pulled in full (every blob hashed); 0 for none, Infinity for all. */
  readonly sample?: number;
  /** Push a test image into this scratch repository (off when undefined). */
  readonly pushTestRepository?: string;
  /** Picks the sample; defaults to an even spread over the tags. */
  readonly pick?: <T>(items: readonly T[], count: number) => T[];
  /** Registry requests (tag lists, manifest HEADs) in flight at once (default 16). */
  readonly concurrency?: number;
  /** Called as each check completes, for progress. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly ping: boolean;
  readonly catalog: {
    readonly expected: number;
    readonly found: number;
    readonly missing: string[];
    readonly unexpected: string[];
  };
  readonly tags: {
    readonly checked: number;
    readonly missing: Array<{ repository: string; tag: string }>;
    readonly unexpected: Array<{ repository: string; tag: string }>;
  };
  /** Per repository of the snapshot: its tags, and how many the registry serves as recorded. */
  readonly repositories: Array<{
    name: string;
    tags: number;
    matched: number;
    missing: number;
    mismatched: number;
  }>;
  readonly manifests: {
    readonly checked: number;
    readonly matched: number;
    readonly mismatched: Array<{
      repository: string;
      tag: string;
      expected: string;
      found: string | undefined;
    }>;
  };
  readonly pulls: Array<{
    repository: string;
    tag: string;
    ok: boolean;
    digest?: string;
    blobs?: number;
    bytes?: number;
    error?: string;
  }>;
  readonly push?: { ok: boolean; repository: string; digest?: string; error?: string };
  /** One line per problem, for people. */
  readonly problems: string[];
}

/** What one repository's check found, merged into the report in snapshot order. */
interface RepositoryFindings {
  readonly problems: string[];
  readonly missing: Array<{ repository: string; tag: string }>;
  readonly unexpected: Array<{ repository: string; tag: string }>;
  readonly mismatched: VerifyReport['manifests']['mismatched'];
  readonly present: Array<{ repository: string; tag: string; digest: string }>;
  heads: number;
}

/** An even spread of `count` items (first, last and between), deterministic. */
export function spread<T>(items: readonly T[], count: number): T[] {
  if (count >= items.length) return [...items];
  if (count <= 0) return [];
  const picked: T[] = [];
  for (let i = 0; i < count; i++) {
    const item = items[Math.round((i * (items.length - 1)) / Math.max(1, count - 1))];
    if (item !== undefined) picked.push(item);
  }
  return picked;
}

/** Checks `client`'s registry against `expected` and reports every difference. */
export async function verifyRegistry(
  client: RegistryClient,
  expected: ExpectedRegistry,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const problems: string[] = [];
  let ping = false;
  try {
    ping = await client.ping();
    if (!ping) problems.push(`GET ${client.baseUrl}/v2/ did not answer 200`);
  } catch (err) {
    problems.push(messageOf(err));
  }

  const expectedNames = expected.repositories.map((r) => r.name);
  let found: string[] = [];
  try {
    found = await client.catalog();
  } catch (err) {
    problems.push(`catalog: ${messageOf(err)}`);
  }
  const foundSet = new Set(found);
  const expectedSet = new Set(expectedNames);
  const missingRepos = expectedNames.filter((n) => !foundSet.has(n));
  const unexpectedRepos = found.filter(
    (n) => !expectedSet.has(n) && n !== options.pushTestRepository,
  );
  for (const name of missingRepos)
    problems.push(`repository ${name} is in the snapshot but not in the catalog`);

  const missingTags: Array<{ repository: string; tag: string }> = [];
  const unexpectedTags: Array<{ repository: string; tag: string }> = [];
  const mismatched: VerifyReport['manifests']['mismatched'] = [];
  const present: Array<{ repository: string; tag: string; digest: string }> = [];
  let tagsChecked = 0;
  let manifestsChecked = 0;
  const totalTags = expected.repositories.reduce((n, r) => n + Object.keys(r.tags).length, 0);
  // A registry with tens of thousands of tags must verify within one Lambda
  // run: tag lists and manifest HEADs go out in parallel (bounded), and the
  // findings are merged in snapshot order so the report reads the same each time.
  const requests = new PQueue({ concurrency: options.concurrency ?? 16 });
  const checked = await Promise.all(
    expected.repositories.map(async (repository) => {
      const found: RepositoryFindings = {
        problems: [],
        missing: [],
        unexpected: [],
        mismatched: [],
        present: [],
        heads: 0,
      };
      let served: string[] = [];
      try {
        served = await requests.add(() => client.tags(repository.name));
      } catch (err) {
        found.problems.push(`tags of ${repository.name}: ${messageOf(err)}`);
      }
      const servedSet = new Set(served);
      for (const tag of served) {
        if (!(tag in repository.tags)) found.unexpected.push({ repository: repository.name, tag });
      }
      const heads = Object.entries(repository.tags).map(async ([tag, digest]) => {
        if (!servedSet.has(tag)) {
          found.missing.push({ repository: repository.name, tag });
          found.problems.push(
            `${repository.name}:${tag} is in the snapshot but the registry does not list it`,
          );
          tagsChecked++;
          return;
        }
        found.heads++;
        let actual: string | undefined;
        try {
          actual = await requests.add(() => client.manifestDigest(repository.name, tag));
        } catch (err) {
          found.problems.push(`${repository.name}:${tag}: ${messageOf(err)}`);
        }
        if (actual === digest) found.present.push({ repository: repository.name, tag, digest });
        else {
          found.mismatched.push({
            repository: repository.name,
            tag,
            expected: digest,
            found: actual,
          });
          found.problems.push(
            `${repository.name}:${tag} serves ${actual ?? 'no manifest'}, the snapshot recorded ${digest}`,
          );
        }
        tagsChecked++;
        options.onProgress?.(tagsChecked, totalTags);
      });
      await Promise.all(heads);
      // Completion order is arbitrary; the report follows the snapshot's tag order.
      const order = new Map(Object.keys(repository.tags).map((tag, i) => [tag, i]));
      const byTag = (a: { tag: string }, b: { tag: string }) =>
        (order.get(a.tag) ?? 0) - (order.get(b.tag) ?? 0);
      found.missing.sort(byTag);
      found.mismatched.sort(byTag);
      found.present.sort(byTag);
      found.problems.sort();
      return found;
    }),
  );
  const repositories = expected.repositories.map((repository, index) => ({
    name: repository.name,
    tags: Object.keys(repository.tags).length,
    matched: checked[index]?.present.length ?? 0,
    missing: checked[index]?.missing.length ?? 0,
    mismatched: checked[index]?.mismatched.length ?? 0,
  }));
  for (const found of checked) {
    problems.push(...found.problems);
    missingTags.push(...found.missing);
    unexpectedTags.push(...found.unexpected);
    mismatched.push(...found.mismatched);
    present.push(...found.present);
    manifestsChecked += found.heads;
  }

  const pick = options.pick ?? spread;
  const sample = pick(present, options.sample ?? 3);
  const pulls: VerifyReport['pulls'] = [];
  for (const image of sample) {
    try {
      const pulled = await client.pull(image.repository, image.digest);
      pulls.push({
        repository: image.repository,
        tag: image.tag,
        ok: true,
        digest: pulled.digest,
        blobs: pulled.blobs.length,
        bytes: pulled.bytes,
      });
    } catch (err) {
      pulls.push({
        repository: image.repository,
        tag: image.tag,
        ok: false,
        error: messageOf(err),
      });
      problems.push(`pulling ${image.repository}:${image.tag}: ${messageOf(err)}`);
    }
  }

  let push: VerifyReport['push'];
  if (options.pushTestRepository !== undefined) {
    try {
      const digest = await client.pushTest(options.pushTestRepository);
      push = { ok: true, repository: options.pushTestRepository, digest };
    } catch (err) {
      push = { ok: false, repository: options.pushTestRepository, error: messageOf(err) };
      problems.push(`push test into ${options.pushTestRepository}: ${messageOf(err)}`);
    }
  }

  return {
    ok: problems.length === 0,
    ping,
    catalog: {
      expected: expectedNames.length,
      found: found.length,
      missing: missingRepos,
      unexpected: unexpectedRepos,
    },
    tags: { checked: tagsChecked, missing: missingTags, unexpected: unexpectedTags },
    repositories,
    manifests: { checked: manifestsChecked, matched: present.length, mismatched },
    pulls,
    ...(push === undefined ? {} : { push }),
    problems,
  };
}
