/**
 * Copy progress: objects and bytes done (of the total when it is known), rate
 * and ETA. A bar on a terminal (cli-progress), plain lines every second
 * otherwise, and `progress` JSON lines with --json.
 */
import { SingleBar } from 'cli-progress';
import { emptyTotals, type Totals } from '../functions/commons/copy/model.ts';
import type { StepProgress } from '../functions/commons/workflows/deps.ts';

export interface Progress {
  update(totals: Totals): void;
  stop(totals: Totals): void;
  /** The total, once it is known (a backup learns it from its plan); later updates show it. */
  setTotal(total: ProgressTotal): void;
}

/** What the run will handle, when it is known before it starts. */
export interface ProgressTotal {
  readonly objects: number;
  /** Known for a restore (the snapshot's size); a plan only counts objects. */
  readonly bytes?: number;
}

export interface ProgressOptions {
  readonly json: boolean;
  /** The phase, e.g. `restore copy`; JSON lines carry it as `phase`. */
  readonly label: string;
  readonly total?: ProgressTotal;
  /** Where JSON lines go (stdout); plain lines and the bar go to stderr. */
  readonly writeJson?: (line: string) => void;
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
const done = (t: Totals) => t.copied + t.skipped + t.failed;

/** Rate and ETA from the start time; the ETA needs a total. */
function pace(t: Totals, started: number, total: ProgressTotal | undefined) {
  const seconds = Math.max((Date.now() - started) / 1000, 0.001);
  const rate = done(t) / seconds;
  const etaSeconds =
    total === undefined || rate === 0
      ? undefined
      : Math.max(0, Math.ceil((total.objects - done(t)) / rate));
  return { rate, etaSeconds };
}

/** Bytes done: of the total when known (every handled object counts), else bytes copied. */
function bytesText(t: Totals, total: ProgressTotal | undefined): string {
  return total?.bytes === undefined
    ? `${mib(t.bytesCopied)} copied`
    : `${mib(t.bytesListed)} of ${mib(total.bytes)}`;
}

/** Progress for one copy phase; the total may come with the options or later through `setTotal`. */
export function createProgress(options: ProgressOptions): Progress {
  let total: ProgressTotal | undefined;
  const setTotal = (next: ProgressTotal | undefined) => {
    total = next !== undefined && next.objects > 0 ? next : undefined;
  };
  setTotal(options.total);
  const started = Date.now();
  if (options.json) {
    const write = options.writeJson ?? ((line: string) => process.stdout.write(line));
    let last = 0;
    return {
      // The first update goes out at once, then at most one line a second.
      update(t) {
        if (Date.now() - last < 1_000) return;
        last = Date.now();
        const { rate, etaSeconds } = pace(t, started, total);
        write(
          `${JSON.stringify({
            event: 'progress',
            phase: options.label,
            ...t,
            ...(total === undefined ? {} : { totalObjects: total.objects }),
            ...(total?.bytes === undefined ? {} : { totalBytes: total.bytes }),
            rate: Math.round(rate),
            ...(etaSeconds === undefined ? {} : { etaSeconds }),
          })}\n`,
        );
      },
      // The result object that follows carries the final totals.
      stop() {},
      setTotal,
    };
  }
  // A bar needs a total: it starts at the first update after the total is
  // known; until then (and off a terminal) plain lines report counts and rate.
  let bar: SingleBar | undefined;
  const showBar = (t: Totals, known: ProgressTotal) => {
    if (bar === undefined) {
      bar = new SingleBar({
        format: `${options.label} [{bar}] {value}/{total} objects | {bytes} | {rate} obj/s | ETA {eta_formatted} | failed {failed}`,
        stream: process.stderr,
        hideCursor: true,
      });
      bar.start(known.objects, 0, { bytes: bytesText(emptyTotals(), known), rate: '0', failed: 0 });
    }
    // A plan's count is an estimate: the bar grows rather than overflow.
    if (done(t) > bar.getTotal()) bar.setTotal(done(t));
    bar.update(done(t), {
      bytes: bytesText(t, known),
      rate: pace(t, started, known).rate.toFixed(0),
      failed: t.failed,
    });
  };
  let last = 0;
  const line = (t: Totals) => {
    const { rate, etaSeconds } = pace(t, started, total);
    process.stderr.write(
      `${options.label}: ${done(t)}${total === undefined ? '' : `/${total.objects}`} objects (${t.copied} copied, ${t.skipped} unchanged, ${t.failed} failed), ${bytesText(t, total)}, ${rate.toFixed(0)} objects/s${etaSeconds === undefined ? '' : `, ETA ${etaSeconds} s`}\n`,
    );
  };
  return {
    update(t) {
      if (process.stderr.isTTY && total !== undefined) showBar(t, total);
      else if (Date.now() - last >= 1_000) {
        last = Date.now();
        line(t);
      }
    },
    stop(t) {
      if (bar !== undefined && total !== undefined) {
        showBar(t, total);
        bar.stop();
      } else line(t);
    },
    setTotal,
  };
}

/** A long step's progress (the restore's proof, the registry verification) as one line and a JSON event. */
export function stepProgressReporter(options: {
  readonly json: boolean;
  readonly writeJson?: (line: string) => void;
  readonly writeText?: (line: string) => void;
}): (event: StepProgress) => void {
  const started = new Map<string, number>();
  const writeJson = options.writeJson ?? ((line: string) => process.stdout.write(line));
  const writeText = options.writeText ?? ((line: string) => process.stderr.write(line));
  return (event) => {
    const since = started.get(event.step) ?? Date.now();
    started.set(event.step, since);
    // The ETA counts what the step measures in bytes when it has them (hashing), else in blobs or tags.
    const measure = event.bytes ?? event.blobs ?? event.tags;
    const seconds = (Date.now() - since) / 1000;
    const etaSeconds =
      measure === undefined || measure.done === 0 || seconds === 0
        ? undefined
        : Math.round(((measure.total - measure.done) * seconds) / measure.done);
    const phase = event.step === 'prove' ? 'restore prove' : 'restore verify';
    if (options.json) {
      writeJson(
        `${JSON.stringify({ event: 'progress', phase, ...event, ...(etaSeconds === undefined ? {} : { etaSeconds }) })}\n`,
      );
      return;
    }
    const of = (c: { done: number; total: number } | undefined, unit: string) =>
      c === undefined ? undefined : `${c.done} of ${c.total} ${unit}`;
    const parts = [
      of(event.repositories, 'repositories'),
      of(event.tags, 'tags'),
      of(event.blobs, event.step === 'prove' ? 'blobs hashed' : 'blobs served'),
      event.bytes === undefined
        ? undefined
        : `${mib(event.bytes.done)} of ${mib(event.bytes.total)}`,
      etaSeconds === undefined ? undefined : `ETA ${etaSeconds} s`,
    ].filter((part) => part !== undefined);
    writeText(`${phase}: ${parts.join(', ')}\n`);
  };
}
