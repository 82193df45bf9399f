/** Restore step: the registry serves what the snapshot's catalog lists. */
import { lambda, metrics } from './commons/aws/runtime.ts';
import { type RestoreState, verifyRestore } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { state: RestoreState }, deps) => {
  const report = await verifyRestore(event.state, deps);
  metrics.addMetric(report.ok ? 'VerificationsPassed' : 'VerificationsFailed', 'Count', 1);
  return report;
});
