/** Local workflow deps with the quay profile, for the Quay tests (the bed is sandbox/quay-bed.ts). */
import type { LocalDepsOptions } from '../../functions/commons/local/deps.ts';
import type { StepLogger } from '../../functions/commons/log.ts';
import type { QuayBed } from '../../sandbox/quay-bed.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { vaultDeps } from './s3.ts';

export { QUAY_DATABASE, QUAY_NAME, type QuayBed, startQuayBed } from '../../sandbox/quay-bed.ts';

/** Local deps with the quay profile on the bed's cluster, the vault in `vault`; `lines` collects the log. */
export function quayDeps(
  s3: S3ServerHandle,
  vault: string,
  bed: QuayBed,
  lines: string[] = [],
  more: Omit<LocalDepsOptions, 'vault'> = {},
) {
  const log =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
    };
  const logger: StepLogger = { info: log('info'), warn: log('warn') };
  return vaultDeps(s3, vault, '', {
    kube: { path: bed.kubeconfig },
    profileName: 'quay',
    profileSettings: { namespace: bed.namespace, waitSeconds: 60 },
    registryUrl: bed.registryUrl,
    logger,
    ...more,
  });
}
