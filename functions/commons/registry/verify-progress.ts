/**
 * The running counts of a verification, told to its `onProgress` listener as
 * checks complete. The repository checks and the sampled pulls move them;
 * verify.ts reads the final counts into the report.
 */
import type { VerifyOptions, VerifyProgress } from './verify.ts';

/** The running counts behind `onProgress`. */
export class Tally {
  repositoriesDone = 0;
  tagsDone = 0;
  blobsChecked = 0;
  blobsTotal = 0;
  pullsDone = 0;
  pullsTotal = 0;
  pullBytes = 0;
  pullTotalBytes = 0;

  readonly repositories: number;
  readonly tags: number;
  readonly listener: VerifyOptions['onProgress'];

  constructor(repositories: number, tags: number, listener: VerifyOptions['onProgress']) {
    this.repositories = repositories;
    this.tags = tags;
    this.listener = listener;
  }

  emit(phase: VerifyProgress['phase']): void {
    this.listener?.(this.tagsDone, this.tags, {
      phase,
      repositories: { done: this.repositoriesDone, total: this.repositories },
      tags: { done: this.tagsDone, total: this.tags },
      blobs: { checked: this.blobsChecked, total: this.blobsTotal },
      pulls: {
        done: this.pullsDone,
        total: this.pullsTotal,
        bytes: this.pullBytes,
        totalBytes: this.pullTotalBytes,
      },
    });
  }
}
