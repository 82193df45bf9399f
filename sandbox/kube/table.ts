/**
 * Server-side printing: `kubectl get` asks for `as=Table` and prints the
 * columns the server chooses, so pods show READY/STATUS/RESTARTS as usual.
 */
import type { ResourceDefinition } from './resources.ts';
import type { KubeObject } from './store.ts';

/** True when the Accept header asks for a meta.k8s.io Table. */
export function wantsTable(accept: string | undefined): boolean {
  return accept !== undefined && /;\s*as=Table/.test(accept);
}

type Cell = string | number;
interface Column {
  readonly name: string;
  readonly type: 'string' | 'integer';
  readonly cell: (object: KubeObject) => Cell;
}

/** `5s`, `3m`, `2h`, `4d` like kubectl's short durations. */
export function age(timestamp: unknown, now = Date.now()): string {
  if (typeof timestamp !== 'string') return '<unknown>';
  const seconds = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const array = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

function podStatus(pod: KubeObject): string {
  if (pod.metadata['deletionTimestamp'] !== undefined) return 'Terminating';
  const status = record(pod['status']);
  let reason = String(status['reason'] ?? status['phase'] ?? 'Pending');
  for (const raw of array(status['containerStatuses'])) {
    const state = record(record(raw)['state']);
    const waiting = record(state['waiting']);
    const terminated = record(state['terminated']);
    if (typeof waiting['reason'] === 'string') reason = waiting['reason'];
    else if (typeof terminated['reason'] === 'string') reason = terminated['reason'];
    else if (state['terminated'] !== undefined)
      reason = `ExitCode:${String(terminated['exitCode'] ?? 0)}`;
  }
  return reason;
}

const name: Column = { name: 'Name', type: 'string', cell: (o) => o.metadata.name };
const created: Column = {
  name: 'Age',
  type: 'string',
  cell: (o) => age(o.metadata.creationTimestamp),
};

const columns: Record<string, readonly Column[]> = {
  Pod: [
    name,
    {
      name: 'Ready',
      type: 'string',
      cell: (pod) => {
        const statuses = array(record(pod['status'])['containerStatuses']).map(record);
        const total = array(record(pod['spec'])['containers']).length;
        return `${statuses.filter((s) => s['ready'] === true).length}/${total}`;
      },
    },
    { name: 'Status', type: 'string', cell: podStatus },
    {
      name: 'Restarts',
      type: 'integer',
      cell: (pod) =>
        array(record(pod['status'])['containerStatuses'])
          .map((s) => Number(record(s)['restartCount'] ?? 0))
          .reduce((a, b) => a + b, 0),
    },
    created,
  ],
  Deployment: [
    name,
    {
      name: 'Ready',
      type: 'string',
      cell: (d) =>
        `${Number(record(d['status'])['readyReplicas'] ?? 0)}/${Number(record(d['spec'])['replicas'] ?? 1)}`,
    },
    {
      name: 'Up-to-date',
      type: 'integer',
      cell: (d) => Number(record(d['status'])['updatedReplicas'] ?? 0),
    },
    {
      name: 'Available',
      type: 'integer',
      cell: (d) => Number(record(d['status'])['availableReplicas'] ?? 0),
    },
    created,
  ],
  Secret: [
    name,
    { name: 'Type', type: 'string', cell: (s) => String(s['type'] ?? 'Opaque') },
    { name: 'Data', type: 'integer', cell: (s) => Object.keys(record(s['data'])).length },
    created,
  ],
  Namespace: [
    name,
    {
      name: 'Status',
      type: 'string',
      cell: (n) => String(record(n['status'])['phase'] ?? 'Active'),
    },
    created,
  ],
};

/** Renders objects as a `meta.k8s.io/v1` Table with metadata-only row objects. */
export function toTable(
  definition: ResourceDefinition,
  value: KubeObject | KubeObject[],
  resourceVersion: string,
): unknown {
  const chosen = columns[definition.kind] ?? [name, created];
  const objects = Array.isArray(value) ? value : [value];
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: chosen.map((column, index) => ({
      name: column.name,
      type: column.type,
      format: index === 0 ? 'name' : '',
      description: '',
      priority: 0,
    })),
    rows: objects.map((object) => ({
      cells: chosen.map((column) => column.cell(object)),
      object: {
        kind: 'PartialObjectMetadata',
        apiVersion: 'meta.k8s.io/v1',
        metadata: object.metadata,
      },
    })),
  };
}
