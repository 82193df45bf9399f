/**
 * Which repositories and tags a selective restore (or backup) takes: globs
 * over repository names and tags, the key range of a repository's links in
 * the registry layout, and the tag-schema fallback of OCI 1.1 referrers
 * (`sha256-<hex>` tags), which a repository's selection brings back with
 * the images they refer to.
 */
import { reservedSegmentOf } from './layout.ts';

/**
 * A glob as a regular expression: `*` any run of characters but `/` (one
 * path component of a repository name), `**` any run including `/`, `?` one
 * character but `/`; the rest is literal.
 */
export function globPattern(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] ?? '';
    if (c === '*' && glob[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else source += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** True when the text has a glob character: it may match many names, or none. */
export const isGlob = (text: string): boolean => /[*?]/.test(text);

/** The literal start of a glob: every name it matches starts with it. */
export function literalPrefix(glob: string): string {
  const at = glob.search(/[*?]/);
  return at === -1 ? glob : glob.slice(0, at);
}

/** Names matched by any of `globs`, in the order given. */
export function matching(names: readonly string[], globs: readonly string[]): string[] {
  const patterns = globs.map(globPattern);
  return names.filter((name) => patterns.some((pattern) => pattern.test(name)));
}

/** The folder of a repository's links, relative to the registry prefix: every key of it starts so. */
export const repositoryFolder = (name: string): string => `repositories/${name}/`;

/**
 * The repository a key relative to the registry prefix belongs to, or
 * undefined for a blob or a key outside `repositories/`. Names may hold
 * slashes; the first reserved segment (`_manifests`, `_layers`, `_uploads`)
 * ends them.
 */
export function repositoryOfKey(relativeKey: string): string | undefined {
  if (!relativeKey.startsWith('repositories/')) return undefined;
  const reserved = reservedSegmentOf(relativeKey);
  if (reserved === undefined) return undefined;
  return relativeKey.slice('repositories/'.length, reserved.end - reserved.segment.length - 2);
}

/**
 * The OCI 1.1 tag-schema fallback for referrers: a registry without the
 * referrers API keeps an index of a manifest's referrers under the tag
 * `sha256-<hex>`; cosign's own tags add a suffix (`sha256-<hex>.sig`,
 * `.att`, `.sbom`). The digest such a tag refers to, or undefined.
 */
export function fallbackSubjectOf(tag: string): string | undefined {
  const match = /^sha256-([0-9a-f]{64})(?:\.[A-Za-z0-9_-]+)?$/.exec(tag);
  return match?.[1] === undefined ? undefined : `sha256:${match[1]}`;
}

/** The fallback tag of a digest's referrers index (OCI 1.1 distribution spec). */
export const fallbackTagOf = (digest: string): string => digest.replace(':', '-');

/**
 * The repositories a partial backup takes: those a glob of `repositories`
 * matches (all when absent), less those a glob of `excludeRepositories`
 * matches. Recorded in the snapshot's manifest.
 */
export interface RepositorySelection {
  readonly repositories?: readonly string[] | undefined;
  readonly excludeRepositories?: readonly string[] | undefined;
}

/** Whether a selection takes the repository `name`. */
export function selects(selection: RepositorySelection, name: string): boolean {
  const included =
    selection.repositories === undefined || matching([name], selection.repositories).length > 0;
  return included && matching([name], selection.excludeRepositories ?? []).length === 0;
}

/** A selection in words: `team/* except team/tmp`. */
export function selectionText(selection: RepositorySelection): string {
  const taken = (selection.repositories ?? ['every repository']).join(', ');
  const left = selection.excludeRepositories ?? [];
  return left.length === 0 ? taken : `${taken} except ${left.join(', ')}`;
}
