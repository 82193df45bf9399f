import { afterEach, beforeEach, describe, expect, it, jest } from '@jest/globals';
import { createProgress } from '../../bin/progress.ts';
import { emptyTotals, type Totals } from '../../functions/commons/copy/model.ts';

const totals = (listed: number, copied: number): Totals => ({ ...emptyTotals(), listed, copied });

describe('copy progress as JSON lines', () => {
  let lines: Array<Record<string, unknown>>;
  const progressOf = (total?: { objects: number; estimated?: boolean }) =>
    createProgress({
      json: true,
      label: 'backup copy',
      ...(total === undefined ? {} : { total }),
      writeJson: (line) => lines.push(JSON.parse(line) as Record<string, unknown>),
    });

  beforeEach(() => {
    lines = [];
    jest.useFakeTimers();
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  it('writes a line at least once a second from the latest totals, also when no shard reported since', () => {
    const progress = progressOf();
    progress.update(totals(1_000, 0));
    jest.advanceTimersByTime(400);
    progress.update(totals(2_000, 500));
    jest.advanceTimersByTime(3_600);
    progress.stop(totals(2_000, 2_000));
    jest.advanceTimersByTime(5_000);

    expect(lines.map((line) => line['copied'])).toEqual([0, 500, 500, 500, 500]);
  });

  it('grows an estimated total to what the copy has listed, so the count never passes it', () => {
    const progress = progressOf({ objects: 1_500, estimated: true });
    progress.update(totals(1_000, 800));
    progress.update(totals(2_000, 1_900));
    jest.advanceTimersByTime(1_000);
    progress.stop(totals(2_000, 2_000));

    expect(lines.map((line) => [line['totalObjects'], line['totalEstimated']])).toEqual([
      [1_500, true],
      [2_000, true],
    ]);
  });

  it('keeps a counted total as it is and does not mark it estimated', () => {
    const progress = progressOf({ objects: 3_000 });
    progress.update(totals(1_000, 1_000));
    progress.stop(totals(3_000, 3_000));

    expect(lines).toEqual([
      expect.objectContaining({ totalObjects: 3_000, copied: 1_000, phase: 'backup copy' }),
    ]);
    expect(lines[0]).not.toHaveProperty('totalEstimated');
  });
});
