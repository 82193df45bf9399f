/**
 * Proving a registry serves what a snapshot holds: ping, the full catalog,
 * every repository's tags, a manifest HEAD per tag compared with the recorded
 * digest, every manifest those tags reach fetched by digest and hashed, a
 * HEAD of every blob they reference (in that repository, since the registry
 * checks the repository's link), full pulls of sampled images with every
 * blob streamed and hashed, and an optional push test. The report names what
 * matched and what differed.
 */
import PQueue from 'p-queue';
import { messageOf } from '../errors.ts';
import type { Descriptor, FetchedManifest, RegistryClient } from './client.ts';

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
  /** Registry requests (tag lists, manifest HEADs and GETs, blob HEADs) in flight at once (default 16). */
  readonly concurrency?: number;
  /** Blobs streamed at once by the full pulls, all images together (default 4). */
  readonly pullConcurrency?: number;
  /**
   * Called as checks complete: `done` of `total` are the tags checked (as
   * before), `progress` says which kind of check moved and every count.
   */
  readonly onProgress?: (done: number, total: number, progress: VerifyProgress) => void;
}

/** Where a verification stands; blob and byte totals grow as manifests are read. */
export interface VerifyProgress {
  /** What moved: a tag's manifest HEAD, a blob HEAD, or a full pull's blobs. */
  readonly phase: 'tags' | 'blobs' | 'pulls';
  /** Repositories whose tags and blobs are all checked. */
  readonly repositories: { readonly done: number; readonly total: number };
  readonly tags: { readonly done: number; readonly total: number };
  /** Blob HEADs done, of the distinct blobs (per repository) found so far. */
  readonly blobs: { readonly checked: number; readonly total: number };
  /** Images pulled in full, and the bytes streamed of those their blobs hold. */
  readonly pulls: {
    readonly done: number;
    readonly total: number;
    readonly bytes: number;
    readonly totalBytes: number;
  };
}

/** A referenced blob the registry does not serve as the manifest describes it. */
export interface BlobProblem {
  readonly repository: string;
  readonly digest: string;
  /** The snapshot's tags in that repository whose images reference it. */
  readonly tags: string[];
  /** What the registry answered (`HEAD answered HTTP 404`, an error, or the size it gave). */
  readonly answer: string;
  readonly status?: number;
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
    /** Manifests fetched by digest (tags' and index children), each hashed. */
    readonly fetched: number;
    /** Manifests that could not be fetched, did not hash to their digest, or did not parse. */
    readonly unreadable: Array<{
      repository: string;
      digest: string;
      tags: string[];
      error: string;
    }>;
  };
  /** Every blob the matched tags' manifests reference, HEADed once per repository. */
  readonly blobs: {
    readonly checked: number;
    readonly served: number;
    /** Not served: the registry answered an error, or the size differs from the manifest's. */
    readonly missing: BlobProblem[];
    /** Bytes streamed and hashed by the full pulls (a blob several images share counts once). */
    readonly hashedBytes: number;
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
  readonly name: string;
  readonly problems: string[];
  readonly missing: Array<{ repository: string; tag: string }>;
  readonly unexpected: Array<{ repository: string; tag: string }>;
  readonly mismatched: VerifyReport['manifests']['mismatched'];
  readonly present: Array<{ repository: string; tag: string; digest: string }>;
  readonly unreadable: VerifyReport['manifests']['unreadable'];
  readonly blobProblems: BlobProblem[];
  /** A matched tag's manifest digest -> every blob its image needs (for the pulls' byte total). */
  readonly closures: Map<string, Descriptor[]>;
  heads: number;
  fetched: number;
  blobsChecked: number;
}

/** The running counts behind `onProgress`. */
class Tally {
  repositoriesDone = 0;
  tagsDone = 0;
  blobsChecked = 0;
  blobsTotal = 0;
  pullsDone = 0;
  pullsTotal = 0;
  pullBytes = 0;
  pullTotalBytes = 0;

  readonly repositories: number;
  readonly tags: number;
  readonly listener: VerifyOptions['onProgress'];

  constructor(repositories: number, tags: number, listener: VerifyOptions['onProgress']) {
    this.repositories = repositories;
    this.tags = tags;
    this.listener = listener;
  }

  emit(phase: VerifyProgress['phase']): void {
    this.listener?.(this.tagsDone, this.tags, {
      phase,
      repositories: { done: this.repositoriesDone, total: this.repositories },
      tags: { done: this.tagsDone, total: this.tags },
      blobs: { checked: this.blobsChecked, total: this.blobsTotal },
      pulls: {
        done: this.pullsDone,
        total: this.pullsTotal,
        bytes: this.pullBytes,
        totalBytes: this.pullTotalBytes,
      },
    });
  }
}

/** `repo:a, repo:b, repo:c and 4 more tags`: the references a problem breaks, briefly. */
function referencesText(repository: string, tags: readonly string[], shown = 3): string {
  const named = tags
    .slice(0, shown)
    .map((tag) => `${repository}:${tag}`)
    .join(', ');
  return tags.length > shown ? `${named} and ${tags.length - shown} more tags` : named;
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

/**
 * One repository: its tag list, a manifest HEAD per snapshot tag, then for
 * the tags that match every manifest they reach (GET by digest, hashed) and
 * a HEAD of every blob those reference, each once. Every request goes through
 * `requests`, which bounds them across all repositories.
 */
async function checkRepository(
  client: RegistryClient,
  repository: ExpectedRegistry['repositories'][number],
  requests: PQueue,
  tally: Tally,
): Promise<RepositoryFindings> {
  const name = repository.name;
  const found: RepositoryFindings = {
    name,
    problems: [],
    missing: [],
    unexpected: [],
    mismatched: [],
    present: [],
    unreadable: [],
    blobProblems: [],
    closures: new Map(),
    heads: 0,
    fetched: 0,
    blobsChecked: 0,
  };
  let served: string[] = [];
  try {
    served = await requests.add(() => client.tags(name));
  } catch (err) {
    found.problems.push(`tags of ${name}: ${messageOf(err)}`);
  }
  const servedSet = new Set(served);
  for (const tag of served) {
    if (!(tag in repository.tags)) found.unexpected.push({ repository: name, tag });
  }
  const heads = Object.entries(repository.tags).map(async ([tag, digest]) => {
    if (!servedSet.has(tag)) {
      found.missing.push({ repository: name, tag });
      found.problems.push(`${name}:${tag} is in the snapshot but the registry does not list it`);
    } else {
      found.heads++;
      let actual: string | undefined;
      try {
        actual = await requests.add(() => client.manifestDigest(name, tag));
      } catch (err) {
        found.problems.push(`${name}:${tag}: ${messageOf(err)}`);
      }
      if (actual === digest) found.present.push({ repository: name, tag, digest });
      else {
        found.mismatched.push({ repository: name, tag, expected: digest, found: actual });
        found.problems.push(
          `${name}:${tag} serves ${actual ?? 'no manifest'}, the snapshot recorded ${digest}`,
        );
      }
    }
    tally.tagsDone++;
    tally.emit('tags');
  });
  await Promise.all(heads);
  // Completion order is arbitrary; the report follows the snapshot's tag order.
  const order = new Map(Object.keys(repository.tags).map((tag, i) => [tag, i]));
  const byTag = (a: { tag: string }, b: { tag: string }) =>
    (order.get(a.tag) ?? 0) - (order.get(b.tag) ?? 0);
  found.missing.sort(byTag);
  found.mismatched.sort(byTag);
  found.present.sort(byTag);

  await checkBlobs(client, found, name, requests, tally);
  found.problems.sort();
  tally.repositoriesDone++;
  tally.emit('blobs');
  return found;
}

/** The manifest walk and blob HEADs of one repository's matched tags, into `found`. */
async function checkBlobs(
  client: RegistryClient,
  found: RepositoryFindings,
  name: string,
  requests: PQueue,
  tally: Tally,
): Promise<void> {
  const tagsOf = new Map<string, string[]>();
  for (const { tag, digest } of found.present)
    tagsOf.set(digest, [...(tagsOf.get(digest) ?? []), tag]);
  const manifests = new Map<string, Promise<FetchedManifest>>();
  const unreadable = new Map<string, { error: string; tags: Set<string> }>();
  const fetchManifest = (digest: string): Promise<FetchedManifest> => {
    let pending = manifests.get(digest);
    if (pending === undefined) {
      pending = requests.add(() => client.manifest(name, digest));
      manifests.set(digest, pending);
      found.fetched++;
    }
    return pending;
  };
  // Every blob an image needs, through its index children; a manifest several tags reach is fetched once.
  const closure = async (digest: string, tags: readonly string[]): Promise<Descriptor[]> => {
    let manifest: FetchedManifest;
    try {
      manifest = await fetchManifest(digest);
    } catch (err) {
      const entry = unreadable.get(digest) ?? { error: messageOf(err), tags: new Set<string>() };
      for (const tag of tags) entry.tags.add(tag);
      unreadable.set(digest, entry);
      return [];
    }
    const children = await Promise.all(manifest.manifests.map((c) => closure(c.digest, tags)));
    return [...manifest.blobs, ...children.flat()];
  };
  const blobs = new Map<string, { sizes: Set<number>; tags: Set<string> }>();
  await Promise.all(
    [...tagsOf].map(async ([digest, tags]) => {
      const needed = await closure(digest, tags);
      found.closures.set(digest, needed);
      for (const blob of needed) {
        let entry = blobs.get(blob.digest);
        if (entry === undefined) {
          entry = { sizes: new Set(), tags: new Set() };
          blobs.set(blob.digest, entry);
          tally.blobsTotal++;
        }
        entry.sizes.add(blob.size);
        for (const tag of tags) entry.tags.add(tag);
      }
    }),
  );
  const order = new Map(found.present.map(({ tag }, i) => [tag, i]));
  const sorted = (tags: Set<string>) =>
    [...tags].sort((a, b) => (order.get(a) ?? 0) - (order.get(b) ?? 0));
  for (const [digest, { error, tags }] of unreadable) {
    found.unreadable.push({ repository: name, digest, tags: sorted(tags), error });
    found.problems.push(`${referencesText(name, sorted(tags))}: ${error}`);
  }
  await Promise.all(
    [...blobs].map(async ([digest, { sizes, tags }]) => {
      let problem: Omit<BlobProblem, 'repository' | 'digest' | 'tags'> | undefined;
      try {
        const status = await requests.add(() => client.blobStatus(name, digest));
        if (!status.served) problem = { answer: status.answer, status: status.status };
        else if (status.size !== undefined && [...sizes].some((size) => size !== status.size)) {
          problem = {
            answer: `HEAD gave ${status.size} bytes, the manifest says ${[...sizes].join(' or ')}`,
          };
        }
      } catch (err) {
        problem = { answer: messageOf(err) };
      }
      found.blobsChecked++;
      tally.blobsChecked++;
      tally.emit('blobs');
      if (problem === undefined) return;
      const referencing = sorted(tags);
      found.blobProblems.push({ repository: name, digest, tags: referencing, ...problem });
      found.problems.push(
        `${referencesText(name, referencing)}: blob ${digest} is not served as the manifest says (${problem.answer})`,
      );
    }),
  );
  found.blobProblems.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
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

  const totalTags = expected.repositories.reduce((n, r) => n + Object.keys(r.tags).length, 0);
  const tally = new Tally(expected.repositories.length, totalTags, options.onProgress);
  // A registry with tens of thousands of tags must verify within one Lambda
  // run: every request goes out in parallel (bounded), and the findings are
  // merged in snapshot order so the report reads the same each time.
  const requests = new PQueue({ concurrency: options.concurrency ?? 16 });
  const checked = await Promise.all(
    expected.repositories.map((repository) => checkRepository(client, repository, requests, tally)),
  );
  const repositories = expected.repositories.map((repository, index) => ({
    name: repository.name,
    tags: Object.keys(repository.tags).length,
    matched: checked[index]?.present.length ?? 0,
    missing: checked[index]?.missing.length ?? 0,
    mismatched: checked[index]?.mismatched.length ?? 0,
  }));
  const missingTags = checked.flatMap((f) => f.missing);
  const mismatched = checked.flatMap((f) => f.mismatched);
  const present = checked.flatMap((f) => f.present);
  for (const f of checked) problems.push(...f.problems);

  const pulls = await pullSample(client, checked, present, options, tally);
  for (const pull of pulls) {
    if (!pull.ok) problems.push(`pulling ${pull.repository}:${pull.tag}: ${pull.error}`);
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

  const blobsChecked = checked.reduce((n, f) => n + f.blobsChecked, 0);
  const blobProblems = checked.flatMap((f) => f.blobProblems);
  return {
    ok: problems.length === 0,
    ping,
    catalog: {
      expected: expectedNames.length,
      found: found.length,
      missing: missingRepos,
      unexpected: unexpectedRepos,
    },
    tags: {
      checked: tally.tagsDone,
      missing: missingTags,
      unexpected: checked.flatMap((f) => f.unexpected),
    },
    repositories,
    manifests: {
      checked: checked.reduce((n, f) => n + f.heads, 0),
      matched: present.length,
      mismatched,
      fetched: checked.reduce((n, f) => n + f.fetched, 0),
      unreadable: checked.flatMap((f) => f.unreadable),
    },
    blobs: {
      checked: blobsChecked,
      served: blobsChecked - blobProblems.length,
      missing: blobProblems,
      hashedBytes: tally.pullBytes,
    },
    pulls,
    ...(push === undefined ? {} : { push }),
    problems,
  };
}

/** Progress is told at most once per this many streamed bytes (and at every image's end). */
const BYTES_PER_PROGRESS = 16 * 1024 ** 2;

/**
 * Full pulls of the sample: several images at once, their blob streams bounded
 * together, and a blob several images share streamed and hashed once.
 */
async function pullSample(
  client: RegistryClient,
  checked: readonly RepositoryFindings[],
  present: ReadonlyArray<{ repository: string; tag: string; digest: string }>,
  options: VerifyOptions,
  tally: Tally,
): Promise<VerifyReport['pulls']> {
  const pick = options.pick ?? spread;
  const sample = pick(present, options.sample ?? 3);
  const closures = new Map(
    checked.flatMap((f) =>
      [...f.closures].map(([digest, blobs]) => [`${f.name}@${digest}`, blobs]),
    ),
  );
  const counted = new Set<string>();
  for (const image of sample) {
    for (const blob of closures.get(`${image.repository}@${image.digest}`) ?? []) {
      const key = `${blob.digest} ${blob.size}`;
      if (counted.has(key)) continue;
      counted.add(key);
      tally.pullTotalBytes += blob.size;
    }
  }
  tally.pullsTotal = sample.length;
  const concurrency = options.pullConcurrency ?? 4;
  const streams = new PQueue({ concurrency });
  const images = new PQueue({ concurrency });
  const verified = new Map<string, Promise<void>>();
  let untold = 0;
  const onBytes = (bytes: number) => {
    tally.pullBytes += bytes;
    untold += bytes;
    if (untold < BYTES_PER_PROGRESS) return;
    untold = 0;
    tally.emit('pulls');
  };
  return Promise.all(
    sample.map((image) =>
      images.add(async (): Promise<VerifyReport['pulls'][number]> => {
        try {
          const pulled = await client.pull(image.repository, image.digest, {
            limit: (task) => streams.add(task),
            verified,
            onBytes,
          });
          return {
            repository: image.repository,
            tag: image.tag,
            ok: true,
            digest: pulled.digest,
            blobs: pulled.blobs.length,
            bytes: pulled.bytes,
          };
        } catch (err) {
          return {
            repository: image.repository,
            tag: image.tag,
            ok: false,
            error: messageOf(err),
          };
        } finally {
          tally.pullsDone++;
          tally.emit('pulls');
        }
      }),
    ),
  );
}
