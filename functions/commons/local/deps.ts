/**
 * Workflow dependencies for one machine (the CLI, the demo, the tests): the
 * one factory (`createDeps`) configured with explicit vault keys (or the SDK's
 * own chain), a kubeconfig file, and a registry URL. The registry bucket's
 * keys are read from the cluster's Secret when a step needs them, exactly as
 * in AWS.
 */
import { createDeps, type DepsConfig, type WorkflowDeps } from '../workflows/deps.ts';

export type LocalDepsOptions = Omit<DepsConfig, 'kubeHint'>;

/** Dependencies of a local run: what is given on this machine, the fix for a missing cluster in CLI words. */
export function createLocalDeps(options: LocalDepsOptions): WorkflowDeps & { close(): void } {
  return createDeps({ ...options, kubeHint: 'pass --kubeconfig (or set KUBECONFIG)' });
}
