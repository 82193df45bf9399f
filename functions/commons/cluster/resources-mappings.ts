/**
 * The backup center's "common modifications" on restore: namespaces,
 * storage classes and image registry prefixes mapped from the old cluster's
 * to the new one's. Parsed from `old=new` pairs (every bad pair named at
 * once) and applied to an object before the resource modifiers.
 */
import { InputError } from '../errors.ts';
import type { KubeObject } from './resources-api.ts';

export interface Mappings {
  readonly namespaces: ReadonlyMap<string, string>;
  readonly storageClasses: ReadonlyMap<string, string>;
  /** Image prefixes, longest first, so the most specific prefix wins. */
  readonly imageRegistries: ReadonlyArray<readonly [string, string]>;
}

export const NO_MAPPINGS: Mappings = {
  namespaces: new Map(),
  storageClasses: new Map(),
  imageRegistries: [],
};

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** `host[:port][/path]`: a registry, or a registry and repository prefix; no scheme, tag or digest. */
const IMAGE_PREFIX = /^[a-zA-Z0-9.-]+(:\d+)?(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/;

export interface MappingFlags {
  readonly namespaces: readonly string[];
  readonly storageClasses: readonly string[];
  readonly imageRegistries: readonly string[];
}

/** The flags' names, for messages. */
const FLAG = {
  namespaces: '--namespace-mapping',
  storageClasses: '--storage-class-mapping',
  imageRegistries: '--image-registry-mapping',
} as const;

const RULES = {
  namespaces: {
    valid: (v: string) => DNS_LABEL.test(v) && v.length <= 63,
    what: 'namespace names (lower-case letters, digits and -, at most 63)',
    example: 'default=default1',
  },
  storageClasses: {
    valid: (v: string) => DNS_SUBDOMAIN.test(v) && v.length <= 253,
    what: 'storage class names (lower-case DNS names)',
    example: 'alicloud-disk-topology-alltype=gp3',
  },
  imageRegistries: {
    valid: (v: string) => IMAGE_PREFIX.test(v),
    what: 'image prefixes: a registry host[:port] and optional repository path, without scheme, tag or digest',
    example: 'old.example.com/team=registry.example.com/team',
  },
} as const;

/** Parses the mapping flags' `old=new` pairs; every bad pair is bad input naming its flag and the fix. */
export function parseMappings(flags: MappingFlags): Mappings {
  const problems: string[] = [];
  const pairs = (key: keyof MappingFlags): Array<[string, string]> => {
    const rule = RULES[key];
    const seen = new Map<string, string>();
    for (const raw of flags[key]) {
      const [from, to, ...extra] = raw.split('=').map((s) => s.trim());
      if (from === undefined || to === undefined || extra.length > 0 || from === '' || to === '') {
        problems.push(
          `${FLAG[key]} ${JSON.stringify(raw)}: expected old=new, e.g. ${rule.example}`,
        );
        continue;
      }
      const bad = [from, to].filter((v) => !rule.valid(v));
      if (bad.length > 0) {
        problems.push(
          `${FLAG[key]} ${JSON.stringify(raw)}: ${bad.map((v) => JSON.stringify(v)).join(' and ')} ${bad.length === 1 ? 'is' : 'are'} not ${rule.what}; e.g. ${rule.example}`,
        );
        continue;
      }
      const earlier = seen.get(from);
      if (earlier !== undefined && earlier !== to)
        problems.push(
          `${FLAG[key]} ${JSON.stringify(raw)}: ${from} is already mapped to ${earlier}; map it once`,
        );
      seen.set(from, to);
    }
    return [...seen.entries()];
  };
  const namespaces = new Map(pairs('namespaces'));
  const storageClasses = new Map(pairs('storageClasses'));
  const imageRegistries = pairs('imageRegistries').sort((a, b) => b[0].length - a[0].length);
  if (problems.length > 0) throw new InputError('the restore mappings are not valid', problems);
  return { namespaces, storageClasses, imageRegistries };
}

/** `image` with its registry prefix mapped, when a prefix matches at a path boundary. */
export function mapImage(image: string, mappings: Mappings): string {
  for (const [from, to] of mappings.imageRegistries) {
    if (image === from) return to;
    const rest = image.slice(from.length);
    // After a bare host, ":" starts a port (another registry); after a repository, a tag.
    const boundary = from.includes('/') ? /^[/:@]/ : /^\//;
    if (image.startsWith(from) && boundary.test(rest)) return `${to}${rest}`;
  }
  return image;
}

type Json = Record<string, unknown>;
const record = (value: unknown): Json | undefined =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Json)
    : undefined;

/** Every pod spec an object carries: a Pod's own, a workload's template, a CronJob's job template. */
export function podSpecsOf(object: KubeObject): Json[] {
  const spec = record(object['spec']);
  if (spec === undefined) return [];
  if (object.kind === 'Pod' && object.apiVersion === 'v1') return [spec];
  const template = record(record(spec['template'])?.['spec']);
  const job = record(record(record(record(spec['jobTemplate'])?.['spec'])?.['template'])?.['spec']);
  return [template, job].filter((s): s is Json => s !== undefined);
}

/** A copy of `object` with the namespace, storage class and image mappings applied. */
export function applyMappings(source: KubeObject, mappings: Mappings): KubeObject {
  const object = structuredClone(source);
  const ns = (name: unknown) =>
    typeof name === 'string' ? (mappings.namespaces.get(name) ?? name) : name;
  const { namespace, name } = object.metadata;
  if (namespace !== undefined) object.metadata.namespace = ns(namespace) as string;
  if (object.kind === 'Namespace' && object.apiVersion === 'v1') {
    object.metadata.name = ns(name) as string;
    const labels = object.metadata.labels;
    if (labels?.['kubernetes.io/metadata.name'] !== undefined)
      labels['kubernetes.io/metadata.name'] = object.metadata.name;
  }
  // Bindings name service accounts by namespace.
  for (const subject of Array.isArray(object['subjects']) ? object['subjects'] : []) {
    const s = record(subject);
    if (s !== undefined && s['namespace'] !== undefined) s['namespace'] = ns(s['namespace']);
  }
  const storageClass = (spec: Json | undefined) => {
    const current = spec?.['storageClassName'];
    if (spec !== undefined && typeof current === 'string')
      spec['storageClassName'] = mappings.storageClasses.get(current) ?? current;
  };
  const spec = record(object['spec']);
  if (object.kind === 'PersistentVolumeClaim' || object.kind === 'PersistentVolume')
    storageClass(spec);
  for (const template of Array.isArray(spec?.['volumeClaimTemplates'])
    ? spec['volumeClaimTemplates']
    : [])
    storageClass(record(record(template)?.['spec']));
  for (const podSpec of podSpecsOf(object))
    for (const key of ['initContainers', 'containers', 'ephemeralContainers'])
      for (const container of Array.isArray(podSpec[key]) ? podSpec[key] : []) {
        const c = record(container);
        if (c !== undefined && typeof c['image'] === 'string')
          c['image'] = mapImage(c['image'], mappings);
      }
  return object;
}
