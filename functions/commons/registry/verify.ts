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
import type { RegistryClient } from './client.ts';
import { pushTestImage } from './client-push.ts';
import { Tally } from './verify-progress.ts';
import { pullSample } from './verify-pull.ts';
import { checkRepository } from './verify-repository.ts';

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
  /**
   * False: leave out the walk of the whole catalog, for a check of a few
   * repositories of a large registry (the registry lists its catalog by
   * walking its bucket's repositories). Each repository's tag list still
   * proves it is there. Default true.
   */
  readonly catalog?: boolean;
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

/** `GET /v2/` answers 200; a problem line saying why and what to change when it does not. */
async function checkPing(client: RegistryClient, problems: string[]): Promise<boolean> {
  try {
    await client.checkAccess();
    return true;
  } catch (err) {
    problems.push(messageOf(err));
    return false;
  }
}

/**
 * The report of a registry that does not answer `GET /v2/`: every later
 * request would fail the same way, so the one problem says why, once.
 */
function unansweredReport(expected: ExpectedRegistry, problems: string[]): VerifyReport {
  return {
    ok: false,
    ping: false,
    catalog: { expected: expected.repositories.length, found: 0, missing: [], unexpected: [] },
    tags: { checked: 0, missing: [], unexpected: [] },
    repositories: expected.repositories.map((r) => ({
      name: r.name,
      tags: Object.keys(r.tags).length,
      matched: 0,
      missing: 0,
      mismatched: 0,
    })),
    manifests: { checked: 0, matched: 0, mismatched: [], fetched: 0, unreadable: [] },
    blobs: { checked: 0, served: 0, missing: [], hashedBytes: 0 },
    pulls: [],
    problems,
  };
}

/** The catalog against the snapshot's repositories (the push test's scratch repository is expected). */
async function checkCatalog(
  client: RegistryClient,
  expected: ExpectedRegistry,
  pushTestRepository: string | undefined,
  problems: string[],
): Promise<VerifyReport['catalog']> {
  const expectedNames = expected.repositories.map((r) => r.name);
  let found: string[] = [];
  try {
    found = await client.catalog();
  } catch (err) {
    problems.push(`catalog: ${messageOf(err)}`);
  }
  const foundSet = new Set(found);
  const expectedSet = new Set(expectedNames);
  const missing = expectedNames.filter((n) => !foundSet.has(n));
  const unexpected = found.filter((n) => !expectedSet.has(n) && n !== pushTestRepository);
  for (const name of missing)
    problems.push(`repository ${name} is in the snapshot but not in the catalog`);
  return { expected: expectedNames.length, found: found.length, missing, unexpected };
}

/** The optional write test: a test image pushed into `repository` and pulled back. */
async function checkPush(
  client: RegistryClient,
  repository: string,
  problems: string[],
): Promise<NonNullable<VerifyReport['push']>> {
  try {
    const digest = await pushTestImage(client, repository);
    return { ok: true, repository, digest };
  } catch (err) {
    problems.push(`push test into ${repository}: ${messageOf(err)}`);
    return { ok: false, repository, error: messageOf(err) };
  }
}

/** Checks `client`'s registry against `expected` and reports every difference. */
export async function verifyRegistry(
  client: RegistryClient,
  expected: ExpectedRegistry,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  const problems: string[] = [];
  const ping = await checkPing(client, problems);
  if (!ping) return unansweredReport(expected, problems);
  const catalog =
    options.catalog === false
      ? { expected: expected.repositories.length, found: 0, missing: [], unexpected: [] }
      : await checkCatalog(client, expected, options.pushTestRepository, problems);

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
  const present = checked.flatMap((f) => f.present);
  for (const f of checked) problems.push(...f.problems);

  const pulls = await pullSample(client, checked, present, options, tally);
  for (const pull of pulls) {
    if (!pull.ok) problems.push(`pulling ${pull.repository}:${pull.tag}: ${pull.error}`);
  }

  const push =
    options.pushTestRepository === undefined
      ? undefined
      : await checkPush(client, options.pushTestRepository, problems);

  const blobsChecked = checked.reduce((n, f) => n + f.blobsChecked, 0);
  const blobProblems = checked.flatMap((f) => f.blobProblems);
  return {
    ok: problems.length === 0,
    ping,
    catalog,
    tags: {
      checked: tally.tagsDone,
      missing: checked.flatMap((f) => f.missing),
      unexpected: checked.flatMap((f) => f.unexpected),
    },
    repositories,
    manifests: {
      checked: checked.reduce((n, f) => n + f.heads, 0),
      matched: present.length,
      mismatched: checked.flatMap((f) => f.mismatched),
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
