import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import type { Totals } from '../../functions/commons/copy/model.ts';
import { Tally } from '../../functions/commons/copy/object-copy.ts';

describe("a shard run's tally", () => {
  beforeEach(() => {
    jest.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('reports the running totals as objects finish, at most every 100 ms', () => {
    // Prepare
    const reports: Totals[] = [];
    const tally = new Tally(10, (totals) => reports.push(totals));

    // Act: five objects at once, one 50 ms later, one 100 ms after the first report, a failure after that.
    for (let i = 0; i < 5; i++) tally.done(100);
    jest.advanceTimersByTime(50);
    tally.done(undefined);
    jest.advanceTimersByTime(50);
    tally.done(100);
    jest.advanceTimersByTime(100);
    tally.fail({ key: 'k', operation: 'CopyObject', code: 'AccessDenied', message: 'no' });

    // Assess: the first object reports; the next within 100 ms does not; later ones carry everything done.
    expect(reports.map((t) => [t.copied, t.skipped, t.failed, t.bytesCopied])).toEqual([
      [1, 0, 0, 100],
      [6, 1, 0, 600],
      [6, 1, 1, 600],
    ]);
  });

  it('reports nothing without a listener, and hands out copies of its counters', () => {
    // Prepare
    const tally = new Tally(10);

    // Act
    tally.done(5);
    const before = tally.totals;
    tally.done(5);

    // Assess
    expect(before.copied).toBe(1);
    expect(tally.totals.copied).toBe(2);
  });
});
