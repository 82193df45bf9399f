/**
 * The object copies of one copy job, shared by its shards: at most
 * `concurrency` run at once, and the lanes (one per kind of shard) take turns
 * for each free slot, first in, first out within a lane.
 *
 * Why lanes: link files are tiny, so their copies cost the client a request
 * each and the server almost nothing, while blob copies cost the server (it
 * reads, hashes and writes every byte) more than the client. Served one kind
 * after the other, first the client and then the server is the bottleneck;
 * served in turns, both work at once. Blobs are still listed only after every
 * link is listed (docs/consistency.md): only the copies overlap.
 *
 * A lane can be held: it is served only when no other lane has a task
 * waiting, until it is released (a registry's tag index entries, which may
 * trail, wait behind the tag links whose copies a link shard waits for).
 *
 * Written here, not with p-queue: p-queue orders by a fixed priority per task,
 * which cannot express taking turns between lanes that start at different
 * times, and it inserts a prioritised task by splicing an array, which costs a
 * copy of the waiting list per task when tens of thousands wait.
 */

interface Job {
  readonly run: () => Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** First in, first out, without `Array.shift` moving every waiting job each time. */
class Fifo<T> {
  #items: T[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#head++;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }
}

interface Waiter {
  readonly lane: string;
  readonly limit: number;
  readonly resolve: () => void;
}

export class CopyQueue {
  readonly concurrency: number;
  readonly #lanes = new Map<string, Fifo<Job>>();
  /** Lane names in the order they take turns. */
  readonly #turns: string[] = [];
  /** Where the next turn starts (taken modulo the number of lanes). */
  #turn = 0;
  #running = 0;
  #waiters: Waiter[] = [];
  /** Held lanes, with how many holders each has. */
  readonly #held = new Map<string, number>();

  constructor(concurrency: number) {
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
    this.concurrency = concurrency;
  }

  /** Queues `run` in `lane`; the promise settles as the task does. */
  add(run: () => Promise<void>, lane = 'default'): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let jobs = this.#lanes.get(lane);
      if (jobs === undefined) {
        jobs = new Fifo<Job>();
        this.#lanes.set(lane, jobs);
        this.#turns.push(lane);
      }
      jobs.push({ run, resolve, reject });
      this.#dispatch();
    });
  }

  /**
   * Serves `lane` only when no lane that is not held has a task waiting,
   * until every holder has released it.
   */
  hold(lane: string): void {
    this.#held.set(lane, (this.#held.get(lane) ?? 0) + 1);
  }

  /** Ends one hold of `lane` (a lane not held is left as it is). */
  release(lane: string): void {
    const holders = this.#held.get(lane);
    if (holders === undefined) return;
    if (holders > 1) this.#held.set(lane, holders - 1);
    else {
      this.#held.delete(lane);
      this.#dispatch();
    }
  }

  /** Tasks queued and not started, in one lane or in all of them. */
  waiting(lane?: string): number {
    if (lane !== undefined) return this.#lanes.get(lane)?.length ?? 0;
    let total = 0;
    for (const jobs of this.#lanes.values()) total += jobs.length;
    return total;
  }

  /** Tasks started and not finished. */
  get running(): number {
    return this.#running;
  }

  /** Resolves once fewer than `limit` tasks wait in `lane` (at once if they already do). */
  async onWaitingBelow(limit: number, lane = 'default'): Promise<void> {
    if (this.waiting(lane) < limit) return;
    await new Promise<void>((resolve) => this.#waiters.push({ lane, limit, resolve }));
  }

  #dispatch(): void {
    while (this.#running < this.concurrency) {
      const job = this.#nextJob();
      if (job === undefined) break;
      this.#running++;
      let started: Promise<void>;
      try {
        started = job.run();
      } catch (err) {
        // A task that throws before it returns a promise fails like one that rejects.
        started = Promise.reject(err);
      }
      started.then(job.resolve, job.reject).finally(() => {
        this.#running--;
        this.#dispatch();
      });
    }
    if (this.#waiters.length > 0) {
      const still: Waiter[] = [];
      for (const waiter of this.#waiters) {
        if (this.waiting(waiter.lane) < waiter.limit) waiter.resolve();
        else still.push(waiter);
      }
      this.#waiters = still;
    }
  }

  /** The first job of the next lane, in turn, that has one: held lanes only when no other has. */
  #nextJob(): Job | undefined {
    return this.#nextIn(false) ?? (this.#held.size > 0 ? this.#nextIn(true) : undefined);
  }

  #nextIn(held: boolean): Job | undefined {
    const count = this.#turns.length;
    for (let tried = 0; tried < count; tried++) {
      const at = (this.#turn + tried) % count;
      const lane = this.#turns[at] ?? '';
      if (this.#held.has(lane) !== held) continue;
      const job = this.#lanes.get(lane)?.shift();
      if (job !== undefined) {
        // The lane after this one goes next, also one added after this turn.
        this.#turn = at + 1;
        return job;
      }
    }
    return undefined;
  }
}
