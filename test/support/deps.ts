/** Workflow dependencies for tests that check what a step asks of the world. */
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';

/**
 * `deps` that note in `asked` each bucket (`s3 <bucket>`), the cluster
 * (`profile`), the registry and the clock a step asks for: nothing, when the
 * step refuses its event.
 */
export function recordingDeps<D extends WorkflowDeps>(deps: D, asked: string[]): D {
  return {
    ...deps,
    s3: (location) => {
      asked.push(`s3 ${location.bucket}`);
      return deps.s3(location);
    },
    profile: () => {
      asked.push('profile');
      return deps.profile();
    },
    registry: () => {
      asked.push('registry');
      return deps.registry();
    },
    now: () => {
      asked.push('now');
      return deps.now();
    },
  };
}
