/**
 * One repository's part of a verification: its tag list, a manifest HEAD per
 * snapshot tag compared with the recorded digest, then for the tags that
 * match every manifest they reach fetched by digest and hashed, and a HEAD of
 * every blob those reference (in that repository, since the registry checks
 * the repository's link). What it finds is merged into the report by
 * verify.ts, in snapshot order.
 */
import type PQueue from 'p-queue';
import { messageOf } from '../errors.ts';
import type { RegistryClient } from './client.ts';
import type { Descriptor, FetchedManifest } from './client-manifest.ts';
import type { BlobProblem, ExpectedRegistry, VerifyReport } from './verify.ts';
import type { Tally } from './verify-progress.ts';

/** What one repository's check found, merged into the report in snapshot order. */
export interface RepositoryFindings {
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

/** `repo:a, repo:b, repo:c and 4 more tags`: the references a problem breaks, briefly. */
function referencesText(repository: string, tags: readonly string[], shown = 3): string {
  const named = tags
    .slice(0, shown)
    .map((tag) => `${repository}:${tag}`)
    .join(', ');
  return tags.length > shown ? `${named} and ${tags.length - shown} more tags` : named;
}

/**
 * One repository: its tag list, a manifest HEAD per snapshot tag, then for
 * the tags that match every manifest they reach (GET by digest, hashed) and
 * a HEAD of every blob those reference, each once. Every request goes through
 * `requests`, which bounds them across all repositories.
 */
export async function checkRepository(
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
