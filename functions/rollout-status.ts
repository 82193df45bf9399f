/** Restore step (polled): how far the registry rollout is. */
import { lambda } from './commons/aws/runtime.ts';
import { checkRollout, type SwitchOutput } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { switched: SwitchOutput }, deps) =>
  checkRollout(event.switched, deps),
);
