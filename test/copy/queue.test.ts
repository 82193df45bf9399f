import { describe, expect, it } from '@jest/globals';
import { CopyQueue } from '../../functions/commons/copy/queue.ts';

/** A task that records when it starts and finishes only when `release` is called. */
function gate() {
  let release: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { done, release: () => release() };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Named tasks that each run until the test finishes them; `started` lists them as they start. */
function gatedTasks() {
  const started: string[] = [];
  const gates = new Map<string, ReturnType<typeof gate>>();
  const task = (name: string) => () => {
    started.push(name);
    const g = gate();
    gates.set(name, g);
    return g.done;
  };
  /** Lets the task that started last finish, after the queue had a turn. */
  const finishLast = async () => {
    await tick();
    gates.get(started.at(-1) ?? '')?.release();
  };
  return { started, task, finishLast };
}

describe('the copy queue', () => {
  it('runs at most its concurrency at once and lanes take turns for free slots', async () => {
    // Prepare: one slot, a lane that queued five tasks before another lane queued three
    const queue = new CopyQueue(1);
    const { started, task, finishLast } = gatedTasks();
    const all = [
      ...['l1', 'l2', 'l3', 'l4', 'l5'].map((n) => queue.add(task(n), 'links')),
      ...['b1', 'b2', 'b3'].map((n) => queue.add(task(n), 'blobs')),
    ];
    // Act: finish whatever runs, one task at a time
    for (let i = 0; i < 8; i++) {
      await finishLast();
      expect(queue.running).toBe(1);
    }
    await Promise.all(all);
    // Assess: first in, first out within a lane; the lanes alternate while both have work
    expect(started).toEqual(['l1', 'b1', 'l2', 'b2', 'l3', 'b3', 'l4', 'l5']);
    expect(queue.running).toBe(0);
    expect(queue.waiting()).toBe(0);
  });

  it('serves a held lane only when no other lane has work, until every holder released it', async () => {
    // Prepare: one slot; the trailing lane is held twice and gets its tasks while a link runs
    const queue = new CopyQueue(1);
    const { started, task, finishLast } = gatedTasks();
    queue.hold('trailing');
    queue.hold('trailing');
    const all = [
      ...['l1', 'l2'].map((n) => queue.add(task(n), 'links')),
      ...['t1', 't2', 't3'].map((n) => queue.add(task(n), 'trailing')),
    ];
    // Act: one holder lets go; a third link comes while the second runs
    await finishLast();
    queue.release('trailing');
    all.push(queue.add(task('l3'), 'links'));
    await finishLast();
    await finishLast();
    // The links ran dry, so the still-held lane had a turn
    await tick();
    const whileHeld = [...started];
    await finishLast();
    await tick();
    // The last holder lets go while t2 runs, and a fourth link comes
    queue.release('trailing');
    all.push(queue.add(task('l4'), 'links'));
    await finishLast();
    await finishLast();
    await finishLast();
    await Promise.all(all);
    // Assess: once released it takes turns like any lane
    expect(whileHeld).toEqual(['l1', 'l2', 'l3', 't1']);
    expect(started).toEqual(['l1', 'l2', 'l3', 't1', 't2', 'l4', 't3']);
    expect(queue.waiting()).toBe(0);
  });

  it('uses every slot for one lane when the other has nothing', async () => {
    // Prepare
    const queue = new CopyQueue(3);
    let peak = 0;
    const task = async () => {
      peak = Math.max(peak, queue.running);
      await tick();
    };
    // Act
    await Promise.all(Array.from({ length: 10 }, () => queue.add(task, 'blobs')));
    // Assess
    expect(peak).toBe(3);
  });

  it('tells a lane when fewer than a limit of its tasks wait, whatever other lanes hold', async () => {
    // Prepare
    const queue = new CopyQueue(1);
    const first = gate();
    const running = queue.add(() => first.done, 'links');
    const waitingLinks = [1, 2, 3].map(() => queue.add(async () => undefined, 'links'));
    const blobs = [1, 2].map(() => queue.add(async () => undefined, 'blobs'));
    expect(queue.waiting('links')).toBe(3);
    expect(queue.waiting('blobs')).toBe(2);
    let below = false;
    const watched = queue.onWaitingBelow(2, 'links').then(() => {
      below = true;
    });
    await tick();
    expect(below).toBe(false);
    // Act
    first.release();
    await watched;
    // Assess
    expect(below).toBe(true);
    expect(queue.waiting('links')).toBeLessThan(2);
    await Promise.all([running, ...waitingLinks, ...blobs]);
    await queue.onWaitingBelow(1, 'links');
  });

  it("settles each add with its task's outcome and keeps serving after a failure", async () => {
    // Prepare
    const queue = new CopyQueue(2);
    // Act
    const failed = queue.add(async () => {
      throw new Error('copy broke');
    });
    const thrown = queue.add(() => {
      throw new Error('copy broke at once');
    });
    const after = queue.add(async () => undefined);
    // Assess
    await expect(failed).rejects.toThrow('copy broke');
    await expect(thrown).rejects.toThrow('copy broke at once');
    await expect(after).resolves.toBeUndefined();
    expect(queue.running).toBe(0);
    expect(() => new CopyQueue(0)).toThrow('concurrency must be a positive integer, got 0');
  });
});
