/**
 * Record files a process wrote and will read back itself, by vault and key:
 * the local runner's finalize takes them from here instead of reading,
 * unpacking and checking its own files again (about a tenth of a second in
 * the benchmark's 20,000-object backup). The newest are kept within a budget
 * of records, so a run that never reached its finalize cannot hold memory
 * for long; a file not here is read from the vault as always.
 */
import type { Vault } from './store.ts';

/** Records kept at most, over every file (about 20 MB). */
const KEPT_RECORDS = 50_000;

export class KeptRecordFiles<F extends { readonly records: readonly unknown[] }> {
  readonly #files = new Map<string, F>();
  readonly #budget: number;
  #records = 0;

  constructor(budget = KEPT_RECORDS) {
    this.#budget = budget;
  }

  #id(vault: Vault, key: string): string {
    return `${vault.location.endpoint ?? ''}\n${vault.location.bucket}\n${key}`;
  }

  /** Keeps `file`, written at `key`, dropping the oldest files over the budget. */
  keep(vault: Vault, key: string, file: F): void {
    this.take(vault, key);
    if (file.records.length > this.#budget) return;
    this.#files.set(this.#id(vault, key), file);
    this.#records += file.records.length;
    for (const [oldest, held] of this.#files) {
      if (this.#records <= this.#budget) break;
      this.#files.delete(oldest);
      this.#records -= held.records.length;
    }
  }

  /** The file kept for `key`, once: a second read goes to the vault. */
  take(vault: Vault, key: string): F | undefined {
    const id = this.#id(vault, key);
    const file = this.#files.get(id);
    if (file === undefined) return undefined;
    this.#files.delete(id);
    this.#records -= file.records.length;
    return file;
  }
}
