/**
 * The fsck report: its shape, and how the findings become it (who each
 * problem breaks, where it lives, one line per failure).
 */
import type { Layout, LeftoverUpload, ManifestGraph } from './fsck-layout.ts';
import { blobDigestOf, blobKeyOf } from './layout.ts';

/** A reference the registry would follow that leads nowhere. */
export interface DanglingReference {
  /** What refers: `repo:tag`, `repo@sha256:...` (a manifest) or a link key. */
  readonly from: string;
  /** What it refers to: a key that is missing or unusable. */
  readonly to: string;
  readonly reason: string;
  /** The blob it names, when it names one. */
  readonly digest?: string;
  /** The `repo:tag`s whose pull needs that blob. */
  readonly usedBy?: string[];
}

export interface FsckReport {
  /** No dangling reference, unreadable manifest, corrupt blob or bad link. Orphans and uploads do not fail it. */
  readonly ok: boolean;
  readonly mode: 'fast' | 'deep';
  readonly counts: {
    readonly objects: number;
    readonly bytes: number;
    readonly blobs: number;
    readonly repositories: number;
    readonly tags: number;
    readonly revisions: number;
    readonly layerLinks: number;
    /** Manifest blobs read and parsed. */
    readonly manifests: number;
    /** Blobs hashed (deep mode). */
    readonly blobsVerified: number;
    /** Links proven by the store's ETag in its listing, not read (deep mode). */
    readonly linksProvenByEtag: number;
    /** Objects read in all. */
    readonly reads: number;
  };
  readonly dangling: DanglingReference[];
  /** Objects the source promised that its store lacks (a snapshot's inventory against the vault). */
  readonly missingObjects: Array<{ key: string; location: string; usedBy: string[] }>;
  /** Manifests (by digest) that are not a JSON object. */
  readonly invalidManifests: Array<{ digest: string; reason: string }>;
  /**
   * Blobs whose content does not hash to their digest (deep mode; manifests in
   * every mode, as they are read anyway) or whose size differs from the one
   * the source promised (every mode).
   */
  readonly corruptBlobs: Array<{
    digest: string;
    actual: string;
    size: number;
    location: string;
    usedBy: string[];
  }>;
  /** Tag -> manifest digest, as the tag links hold them. */
  readonly tagDigests: Array<{ repository: string; tag: string; digest: string }>;
  /** Revision and layer links whose content is not the digest in their key (deep mode). */
  readonly badLinks: Array<{ key: string; found: string }>;
  /** Blobs no manifest, revision link or tag refers to (a registry GC would remove them). */
  readonly orphanBlobs: string[];
  /** Unfinished pushes left in `_uploads/`. */
  readonly uploads: LeftoverUpload[];
  /** One line per failure, at most `PROBLEM_LINES` (the rest counted on the last line). */
  readonly problems: string[];
  /** Orphans and leftover uploads: worth knowing, not a failure. */
  readonly notices: string[];
}

/** Lines of `problems` and `notices` before the rest is summarised. */
export const PROBLEM_LINES = 20;

/** Summarises a long list into at most `limit` lines. */
function capped(lines: readonly string[], limit = PROBLEM_LINES): string[] {
  if (lines.length <= limit) return [...lines];
  return [...lines.slice(0, limit - 1), `... and ${lines.length - limit + 1} more`];
}

/** At most three users by name, the rest counted. */
function usersText(users: readonly string[]): string {
  if (users.length === 0) return 'no tag';
  const named = users.slice(0, 3).join(', ');
  return users.length > 3 ? `${named} and ${users.length - 3} more` : named;
}

/** A corrupt blob as found, before its users are known. */
export interface Corruption {
  readonly actual: string;
  readonly size: number;
}

/** What the steps of one check found, as the report needs it. */
export interface FsckFindings {
  /** How problems name the store. */
  readonly label: string;
  /** Where a key lives in the store, for messages. */
  readonly locate: (key: string) => string;
  readonly deep: boolean;
  readonly objects: number;
  /** Keys the source promised that its store lacks. */
  readonly absent: ReadonlySet<string>;
  readonly layout: Layout;
  readonly graph: ManifestGraph;
  /** Blobs something refers to, by digest id: the rest are orphans. */
  readonly referenced: ReadonlySet<number>;
  readonly dangling: DanglingReference[];
  readonly invalidManifests: FsckReport['invalidManifests'];
  readonly corrupt: ReadonlyMap<string, Corruption>;
  readonly tagDigests: FsckReport['tagDigests'];
  readonly badLinks: FsckReport['badLinks'];
  /** Manifest blobs read. */
  readonly manifests: number;
  readonly blobsVerified: number;
  readonly linksProvenByEtag: number;
  readonly reads: number;
}

/** The report from what the steps found: who each problem breaks, and where it lives. */
export function fsckReport(found: FsckFindings): FsckReport {
  const { layout, dangling, invalidManifests, label } = found;
  const where = found.locate;
  const users = found.graph.users(
    new Set(
      [
        ...found.corrupt.keys(),
        ...[...found.absent].map(blobDigestOf),
        ...dangling.map((d) => d.digest),
      ].filter((digest) => digest !== undefined),
    ),
  );
  const usedBy = (digest: string | undefined) =>
    digest === undefined ? [] : (users.get(digest) ?? []);
  const corruptBlobs: FsckReport['corruptBlobs'] = [...found.corrupt]
    .map(([digest, corruption]) => ({
      digest,
      ...corruption,
      location: where(blobKeyOf(digest)),
      usedBy: usedBy(digest),
    }))
    .sort((a, b) => a.digest.localeCompare(b.digest));
  const missingObjects: FsckReport['missingObjects'] = [...found.absent]
    .sort()
    .map((key) => ({ key, location: where(key), usedBy: usedBy(blobDigestOf(key)) }));
  const orphanBlobs = [...layout.blobs.ids()]
    .filter((id) => !found.referenced.has(id))
    .map((id) => layout.digests.digest(id))
    .sort();
  const byFrom = (a: DanglingReference, b: DanglingReference) =>
    `${a.from} ${a.to}`.localeCompare(`${b.from} ${b.to}`);
  dangling.sort(byFrom);
  invalidManifests.sort((a, b) => a.digest.localeCompare(b.digest));
  const badLinks = [...found.badLinks].sort((a, b) => a.key.localeCompare(b.key));
  // A blob missing from the store is named once, by the object line, not by every reference to it.
  const danglingLines = dangling
    .filter((d) => !(d.digest !== undefined && found.absent.has(blobKeyOf(d.digest))))
    .map((d) =>
      d.digest === undefined
        ? `dangling: ${d.from} -> ${d.to} (${d.reason})`
        : `${d.reason}: ${d.digest} (${where(d.to)}), needed by ${usersText(usedBy(d.digest).length > 0 ? usedBy(d.digest) : [d.from])}`,
    );
  const problems = capped([
    ...missingObjects.map((m) => {
      const digest = blobDigestOf(m.key);
      return digest === undefined
        ? `missing in ${label}: ${m.key} (${m.location})`
        : `missing in ${label}: blob ${digest} (${m.location}), needed by ${usersText(m.usedBy)}`;
    }),
    ...danglingLines,
    ...invalidManifests.map((m) => `unreadable manifest ${m.digest}: ${m.reason}`),
    ...corruptBlobs.map(
      (c) =>
        `corrupt in ${label}: blob ${c.digest} (${c.location}) holds ${c.actual.startsWith('sha256:') ? `content hashing to ${c.actual}` : c.actual}; needed by ${usersText(c.usedBy)}`,
    ),
    ...badLinks.map((l) => `bad link ${l.key}: holds ${JSON.stringify(l.found)}`),
  ]);
  const notices = capped([
    ...(orphanBlobs.length === 0
      ? []
      : [
          `${orphanBlobs.length} orphan blobs (no manifest refers to them), e.g. ${orphanBlobs.slice(0, 3).join(', ')}`,
        ]),
    ...layout.uploads.map(
      (u) =>
        `leftover upload ${u.repository}/_uploads/${u.id} (${u.objects} objects, ${u.bytes} bytes)`,
    ),
  ]);
  return {
    ok:
      dangling.length === 0 &&
      missingObjects.length === 0 &&
      invalidManifests.length === 0 &&
      corruptBlobs.length === 0 &&
      badLinks.length === 0,
    mode: found.deep ? 'deep' : 'fast',
    counts: {
      objects: found.objects,
      bytes: layout.bytes,
      blobs: layout.blobs.size,
      repositories: layout.repositories.size,
      tags: layout.tags.length,
      revisions: layout.revisions.size,
      layerLinks: layout.layerLinks.size,
      manifests: found.manifests,
      blobsVerified: found.blobsVerified,
      linksProvenByEtag: found.linksProvenByEtag,
      reads: found.reads,
    },
    dangling: dangling.map((d) =>
      d.digest === undefined ? d : { ...d, usedBy: usedBy(d.digest) },
    ),
    missingObjects,
    invalidManifests,
    corruptBlobs,
    tagDigests: found.tagDigests.sort((a, b) =>
      `${a.repository}:${a.tag}`.localeCompare(`${b.repository}:${b.tag}`),
    ),
    badLinks,
    orphanBlobs,
    uploads: layout.uploads,
    problems,
    notices,
  };
}
