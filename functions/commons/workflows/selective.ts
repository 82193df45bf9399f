import { createHash } from 'node:crypto';
import PQueue from 'p-queue';
import { type CopyContext, createCopyContext } from '../copy/context.ts';
import { copyEntries, type ListEntry } from '../copy/entries.ts';
import { addTotals, emptyTotals, type Location, type Totals } from '../copy/model.ts';
import { genericCopyPolicy } from '../copy/plan.ts';
import { emptyTarget } from '../copy/target-state.ts';
import { CopyMode } from '../copy/transfer.ts';
import { InputError, messageOf, ObjectsFailedError, VaultError } from '../errors.ts';
import type { RegistryClient } from '../registry/client.ts';
import { blobKeyOf, normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import { fallbackTagOf, repositoryFolder } from '../registry/selection.ts';
import { type ExpectedRegistry, verifyRegistry } from '../registry/verify.ts';
import { headObject } from '../s3/get-object.ts';
import { type SnapshotManifest, vaultKeys } from '../vault/format.ts';
import { eachListedKey, getBytes, rootOf } from '../vault/store.ts';
import { Access, type WorkflowDeps } from './deps.ts';
import { neededBy, readSelection } from './selective-read.ts';

const md5Hex = (text: string) => createHash('md5').update(text).digest('hex');

/** What to restore, and where: the input of a selective restore. */
export interface SelectiveRestoreRequest {
  /** The snapshot, complete and of a registry (the caller resolved it). */
  readonly snapshot: SnapshotManifest;
  /** Repository names or globs (`team/*`, `**`); each must name something the snapshot holds. */
  readonly repositories: readonly string[];
  /** Tag names or globs; all tags of the selected repositories when absent. */
  readonly tags?: readonly string[];
  /** Replace live tags that point elsewhere than the snapshot says (kept otherwise). */
  readonly overwriteTags: boolean;
  /** Plan and report only: nothing is written anywhere. */
  readonly dryRun: boolean;
  /**
   * The live registry's bucket and its driver's root directory; absent: read
   * from the registry's resource (the ACP ModuleInfo), as the backup does.
   */
  readonly target?: { readonly location: Location; readonly rootDirectory: string };
  /** Restored tags pulled in full after the copy, every blob's sha256 checked. */
  readonly pullSample: number | 'all';
  readonly concurrency: number;
}

/** A live tag that points elsewhere than the snapshot says. */
export interface MovedTag {
  readonly tag: string;
  /** What the live registry's tag link holds. */
  readonly live: string;
  readonly snapshot: string;
}

/** What a selective restore does (or, dry, would do) to one repository. */
export interface RepositoryOutcome {
  readonly name: string;
  /** Tags the live registry lacks: written. */
  readonly added: readonly string[];
  /** Tags that moved, written back with `overwriteTags`. */
  readonly replaced: readonly MovedTag[];
  /** Tags that moved and are left as they are (no `overwriteTags`). */
  readonly kept: readonly MovedTag[];
  /** Tags the live registry already serves as the snapshot says. */
  readonly unchanged: number;
  /** Referrers (signatures, SBOMs) restored with the manifests they refer to: subject -> referrers. */
  readonly referrers: Readonly<Record<string, readonly string[]>>;
}

export interface SelectiveRestoreResult {
  readonly snapshotId: string;
  readonly dryRun: boolean;
  /** The live bucket written to (`s3://bucket/<registry prefix>`). */
  readonly target: string;
  readonly repositories: readonly RepositoryOutcome[];
  /** Blobs the selection needs, those the live bucket holds already, and those (to be) copied. */
  readonly blobs: {
    readonly needed: number;
    readonly present: number;
    readonly copied: number;
    readonly bytes: number;
  };
  /** Revision, layer and tag links likewise. */
  readonly links: { readonly needed: number; readonly present: number; readonly copied: number };
  /** The copy's totals (zero in a dry run). */
  readonly totals: Totals;
  /** The restored repositories through the registry API (not in a dry run). */
  readonly verify?: SelectiveVerifyOutcome;
}

export interface SelectiveVerifyOutcome {
  readonly ok: boolean;
  readonly tags: number;
  readonly blobsServed: number;
  readonly pulled: number;
  /** Subjects whose referrers the registry lists, by the referrers API or the fallback tag. */
  readonly referrersListed: number;
  /** `api` when the registry serves the referrers API, `fallback-tag` when only the tag schema. */
  readonly referrersBy?: 'api' | 'fallback-tag';
  readonly problems: readonly string[];
}

/** The live registry's bucket and the prefix of its registry data, from the request or its resource. */
async function liveTarget(
  request: SelectiveRestoreRequest,
  deps: WorkflowDeps,
): Promise<{ location: Location; base: string }> {
  if (request.target !== undefined)
    return {
      location: request.target.location,
      base: `${request.target.location.prefix}${normaliseRoot(request.target.rootDirectory)}${REGISTRY_V2}`,
    };
  const { storage } = await deps.profile().discover();
  return {
    location: {
      ...(storage.regionEndpoint === '' ? {} : { endpoint: storage.regionEndpoint }),
      region: storage.region,
      bucket: storage.bucket,
      prefix: '',
      forcePathStyle: deps.pathStyle(storage.regionEndpoint),
      access: Access.registrySecret(storage.secretName),
    },
    base: `${normaliseRoot(storage.rootDirectory)}${REGISTRY_V2}`,
  };
}

/** One step of the copy, in the order the registry stays consistent in. */
interface Phase {
  readonly name: 'blobs' | 'layer links' | 'revision links' | 'tag history' | 'tags';
  readonly entries: ListEntry[];
}

/** The plan: what to copy, step by step, and what the report says of it. */
interface Plan {
  readonly phases: Phase[];
  readonly repositories: RepositoryOutcome[];
  readonly expected: ExpectedRegistry;
  readonly referrers: Array<{
    repository: string;
    subject: string;
    referrers: string[];
    /** Those the snapshot's fallback tag listed. */
    fallbackListed: string[];
  }>;
  readonly blobs: { needed: number; present: number; bytes: number };
  readonly links: { needed: number; present: number };
}

/**
 * Everything the restore will write, found without writing: the snapshot's
 * links of the selection against a listing of each live repository folder
 * (a tag link whose ETag is not the MD5 of the snapshot's digest is read),
 * and every needed blob HEADed in the live bucket, then in the vault.
 */
async function planRestore(
  request: SelectiveRestoreRequest,
  deps: WorkflowDeps,
  live: { location: Location; base: string; client: Awaited<ReturnType<WorkflowDeps['s3']>> },
): Promise<Plan> {
  const { snapshot } = request;
  const root = rootOf(deps.vault);
  const { selected, base, links, manifestOf } = await readSelection(deps, snapshot, request);
  const liveKey = (sourceKey: string) => `${live.base}${sourceKey.slice(base.length)}`;
  const heads = new PQueue({ concurrency: request.concurrency });
  const phases: Record<Phase['name'], ListEntry[]> = {
    blobs: [],
    'layer links': [],
    'revision links': [],
    'tag history': [],
    tags: [],
  };
  const repositories: RepositoryOutcome[] = [];
  const expected: ExpectedRegistry['repositories'][number][] = [];
  const referrers: Plan['referrers'] = [];
  const blobsNeeded = new Set<string>();
  let linksNeeded = 0;
  let linksPresent = 0;
  for (const repository of selected) {
    const held = links.get(repository.name);
    if (held === undefined) continue;
    const needed = await neededBy(held, repository, request.tags === undefined, manifestOf);
    const folder = `${live.base}${repositoryFolder(repository.name)}`;
    const present = new Map<string, string>();
    for await (const listed of eachListedKey(
      { location: live.location, client: live.client },
      folder,
    ))
      present.set(listed.key, listed.etag);
    const entryOf = (sourceKey: string): ListEntry | undefined => {
      const object = held.objects.get(sourceKey);
      return object === undefined
        ? undefined
        : {
            object: { key: object.vaultKey, size: object.size, etag: object.etag },
            targetKey: liveKey(sourceKey),
          };
    };
    const addLink = (phase: Phase['name'], sourceKey: string) => {
      const entry = entryOf(sourceKey);
      if (entry === undefined) return;
      linksNeeded++;
      if (present.has(entry.targetKey)) linksPresent++;
      else phases[phase].push(entry);
    };
    const folderKey = `${base}${repositoryFolder(repository.name)}`;
    for (const digest of needed.layers)
      addLink('layer links', `${folderKey}_layers/sha256/${digest.slice(7)}/link`);
    for (const digest of needed.revisions)
      addLink('revision links', `${folderKey}_manifests/revisions/sha256/${digest.slice(7)}/link`);
    const outcome = {
      added: [] as string[],
      replaced: [] as MovedTag[],
      kept: [] as MovedTag[],
      unchanged: 0,
    };
    const served: Record<string, string> = {};
    for (const tag of [...needed.tags].sort()) {
      const digest = repository.tags[tag];
      if (digest === undefined) continue;
      const current = `${folderKey}_manifests/tags/${tag}/current/link`;
      const entry = entryOf(current);
      if (entry === undefined) continue;
      linksNeeded++;
      const etag = present.get(entry.targetKey);
      let liveDigest: string | undefined;
      if (etag !== undefined && etag !== md5Hex(digest)) {
        // Not the MD5 of the snapshot's digest: another digest, or a store whose ETags are not MD5s.
        const body = await getBytes(
          { location: live.location, client: live.client },
          entry.targetKey,
        );
        liveDigest = body?.toString('utf8').trim();
      } else if (etag !== undefined) liveDigest = digest;
      if (liveDigest === undefined) {
        outcome.added.push(tag);
        phases.tags.push(entry);
      } else if (liveDigest === digest) {
        linksPresent++;
        outcome.unchanged++;
      } else if (request.overwriteTags) {
        outcome.replaced.push({ tag, live: liveDigest, snapshot: digest });
        phases.tags.push(entry);
      } else {
        linksPresent++;
        outcome.kept.push({ tag, live: liveDigest, snapshot: digest });
        continue;
      }
      // A tag written back gets its history too (what the registry consults to delete manifests).
      for (const { digest: was, key } of held.tagHistory.get(tag) ?? [])
        if (needed.revisions.has(was)) addLink('tag history', key);
      served[tag] = digest;
    }
    for (const digest of [...needed.revisions, ...needed.layers]) blobsNeeded.add(digest);
    const referred: Record<string, string[]> = {};
    for (const [subject, by] of needed.referrers) {
      referred[subject] = [...by].sort();
      referrers.push({
        repository: repository.name,
        subject,
        referrers: referred[subject],
        fallbackListed: [...(needed.fallbackListed.get(subject) ?? [])],
      });
    }
    repositories.push({ name: repository.name, ...outcome, referrers: referred });
    expected.push({ name: repository.name, tags: served });
  }
  // Blobs: a HEAD in the live bucket, then, for those it lacks, a HEAD in the vault for the size.
  let present = 0;
  let bytes = 0;
  const missingInVault: string[] = [];
  await Promise.all(
    [...blobsNeeded].sort().map((digest) =>
      heads.add(async () => {
        const targetKey = `${live.base}${blobKeyOf(digest)}`;
        if ((await headObject(live.client, live.location.bucket, targetKey)) !== undefined) {
          present++;
          return;
        }
        const vaultKey = vaultKeys.blob(root, digest);
        const held = await headObject(deps.vault.client, deps.vault.location.bucket, vaultKey);
        if (held === undefined) {
          missingInVault.push(`${digest} (${vaultKey})`);
          return;
        }
        bytes += held.size;
        phases.blobs.push({ object: { key: vaultKey, ...held }, targetKey, digest });
      }),
    ),
  );
  if (missingInVault.length > 0)
    throw new VaultError(
      `snapshot ${snapshot.id} lacks ${missingInVault.length} blob(s) the selection needs, missing in the vault: ${missingInVault.slice(0, 5).join(', ')}; nothing was written. Run \`regvault fsck --snapshot ${snapshot.id}\`, or restore an older snapshot`,
    );
  phases.blobs.sort((a, b) => (a.targetKey < b.targetKey ? -1 : 1));
  return {
    phases: (Object.keys(phases) as Phase['name'][]).map((name) => ({
      name,
      entries: phases[name],
    })),
    repositories,
    expected: { repositories: expected },
    referrers,
    blobs: { needed: blobsNeeded.size, present, bytes },
    links: { needed: linksNeeded, present: linksPresent },
  };
}

/**
 * Copies the plan's steps one after the other, each finished before the
 * next starts; a step with a failed object stops the restore there, so no
 * tag ever points at a manifest or layer that did not arrive.
 */
async function copyPhases(
  ctx: CopyContext,
  phases: readonly Phase[],
  onProgress: ((totals: Totals) => void) | undefined,
): Promise<Totals> {
  let totals = emptyTotals();
  for (const phase of phases) {
    if (phase.entries.length === 0) continue;
    const before = totals;
    const result = await copyEntries(ctx, phase.name, phase.entries, {
      ...(onProgress === undefined
        ? {}
        : { onProgress: (t: Totals) => onProgress(addTotals(before, t)) }),
    });
    totals = addTotals(totals, result.totals);
    onProgress?.(totals);
    if (result.failures.length > 0 || result.totals.failed > 0) {
      const sample = result.failures
        .slice(0, 5)
        .map((f) => `${f.key}: ${f.code} ${f.message}`)
        .join('; ');
      throw new ObjectsFailedError(
        `restoring the ${phase.name} failed for ${result.totals.failed} object(s) (${sample}); the steps after it (${phases
          .slice(phases.indexOf(phase) + 1)
          .map((p) => p.name)
          .join(
            ', ',
          )}) were not written, so the registry serves none of it half-restored. Run the same restore again: what arrived is skipped`,
      );
    }
  }
  return totals;
}

/**
 * The restored repositories through the registry API: every restored tag
 * resolves to the snapshot's digest, every blob of theirs is served, the
 * sample is pulled in full with every sha256 checked; and each restored
 * subject's referrers are listed by the referrers API or, where the
 * registry has none (Docker Distribution 2.8), by its fallback tag's index.
 */
async function verifySelection(
  registry: RegistryClient,
  plan: Plan,
  pullSample: number | 'all',
): Promise<SelectiveVerifyOutcome> {
  const report = await verifyRegistry(registry, plan.expected, {
    sample: pullSample === 'all' ? Number.POSITIVE_INFINITY : pullSample,
    // The registry walks its whole bucket for its catalog; each restored repository's tag list proves it.
    catalog: false,
  });
  const problems = [...report.problems];
  let referrersListed = 0;
  let referrersBy: SelectiveVerifyOutcome['referrersBy'];
  for (const { repository, subject, referrers, fallbackListed } of plan.referrers) {
    let listed = await registry.referrers(repository, subject);
    // Without the API a registry lists referrers only in the fallback tag's index, as the
    // snapshot's did: those must be listed again; the others must be served by digest.
    let expected = referrers;
    if (listed === undefined) {
      referrersBy ??= 'fallback-tag';
      expected = fallbackListed;
      const tag = fallbackTagOf(subject);
      try {
        const index = await registry.manifestDigest(repository, tag);
        listed =
          index === undefined
            ? []
            : (await registry.manifest(repository, index)).manifests.map((m) => m.digest);
        for (const digest of referrers.filter((d) => !fallbackListed.includes(d)))
          if ((await registry.manifestDigest(repository, digest)) !== digest)
            problems.push(`${repository}@${digest}: the referrer of ${subject} is not served`);
      } catch (err) {
        problems.push(`${repository}:${tag} (the referrers of ${subject}): ${messageOf(err)}`);
        continue;
      }
    } else referrersBy = 'api';
    const absent = expected.filter((digest) => !listed.includes(digest));
    if (absent.length === 0) referrersListed++;
    else
      problems.push(
        `${repository}@${subject}: the registry does not list its referrer(s) ${absent.join(', ')} (by ${referrersBy === 'api' ? 'the referrers API' : `the fallback tag ${fallbackTagOf(subject)}`})`,
      );
  }
  return {
    ok: problems.length === 0,
    tags: report.tags.checked,
    blobsServed: report.blobs.served,
    pulled: report.pulls.filter((p) => p.ok).length,
    referrersListed,
    ...(referrersBy === undefined ? {} : { referrersBy }),
    problems: problems.slice(0, 20),
  };
}

/**
 * Restores the selected repositories (and tags) of a snapshot into the live
 * registry's bucket and verifies them through the registry API; with
 * `dryRun`, reports what it would add or replace and writes nothing.
 */
export async function restoreSelection(
  request: SelectiveRestoreRequest,
  deps: WorkflowDeps,
  hooks: {
    /** What the copy will hold, once planned. */
    readonly onPlanned?: (total: { objects: number; bytes: number }) => void;
    readonly onProgress?: (totals: Totals) => void;
  } = {},
): Promise<SelectiveRestoreResult> {
  if (request.snapshot.layout !== 'registry')
    throw new InputError('the snapshot cannot be restored by repository', [
      request.snapshot.layout === 'quay'
        ? `snapshot: ${request.snapshot.id} holds Quay's layout, whose tags are in its database dump; restore it whole (regvault restore --profile quay)`
        : `snapshot: ${request.snapshot.id} holds a plain bucket, not a registry; restore it whole`,
    ]);
  const registry = deps.registry();
  if (registry === undefined && !request.dryRun)
    throw new InputError('a restore into the live registry verifies it afterwards', [
      'registryUrl: where the registry answers; configure it (CLI: --registry-url; AWS: the registryUrl stack setting)',
    ]);
  const target = await liveTarget(request, deps);
  const client = await deps.s3(target.location);
  const plan = await planRestore(request, deps, { ...target, client });
  const where = `s3://${target.location.bucket}/${target.base}`;
  const copied = (name: Phase['name'][]) =>
    plan.phases.filter((p) => name.includes(p.name)).reduce((n, p) => n + p.entries.length, 0);
  const summary = {
    snapshotId: request.snapshot.id,
    dryRun: request.dryRun,
    target: where,
    repositories: plan.repositories,
    blobs: { ...plan.blobs, copied: copied(['blobs']) },
    links: {
      ...plan.links,
      copied: copied(['layer links', 'revision links', 'tag history', 'tags']),
    },
  };
  if (request.dryRun) return { ...summary, totals: emptyTotals() };
  const linkBytes = plan.phases
    .filter((p) => p.name !== 'blobs')
    .reduce((n, p) => n + p.entries.reduce((m, e) => m + e.object.size, 0), 0);
  hooks.onPlanned?.({
    objects: summary.blobs.copied + summary.links.copied,
    bytes: plan.blobs.bytes + linkBytes,
  });
  const same = await deps.sameAccess(deps.vault.location, target.location);
  const ctx = createCopyContext({
    // Server-side copies go through the live bucket's client, which must read the vault.
    source: { location: deps.vault.location, client: same ? client : deps.vault.client },
    target: { location: target.location, client },
    mapKey: (key) => key,
    // The plan copies only what the live bucket lacked (or a tag to replace).
    targetState: emptyTarget,
    policy: genericCopyPolicy,
    concurrency: request.concurrency,
    transfer: { mode: same ? CopyMode.ServerSide : CopyMode.Stream },
  });
  const totals = await copyPhases(ctx, plan.phases, hooks.onProgress);
  deps.log.info('selective restore copied', { snapshotId: request.snapshot.id, ...totals });
  const verify =
    registry === undefined ? undefined : await verifySelection(registry, plan, request.pullSample);
  return { ...summary, totals, ...(verify === undefined ? {} : { verify }) };
}
