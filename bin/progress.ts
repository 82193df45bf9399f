/**
 * Copy progress: objects and bytes done (of the total when it is known), rate
 * and ETA. A bar on a terminal (cli-progress), plain lines every second
 * otherwise, and `progress` JSON lines with --json, written every 0.9 s
 * from the latest totals.
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
  /**
   * True for a plan's estimate: shown as "about", and it grows to the objects
   * the copy has listed so far, so the count never runs past its total.
   */
  readonly estimated?: boolean;
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

/** The total to show for `t`: a plan's estimate grows to what the copy has counted (listed) so far. */
function shownTotal(t: Totals, total: ProgressTotal | undefined): ProgressTotal | undefined {
  if (total?.estimated !== true) return total;
  return { ...total, objects: Math.max(total.objects, t.listed, done(t)) };
}

/**
 * How often progress lines go out while a copy runs, whether or not a shard
 * reported since: under a second, so a busy event loop's timer lag still
 * leaves no gap over one (1.04 s was measured with a one-second interval).
 */
const TICK_MS = 900;

/**
 * Progress for one copy phase; the total may come with the options or later
 * through `setTotal`. Updates only record the latest totals; a 0.9-second
 * ticker writes them, so lines keep coming while shards are between pages.
 */
export function createProgress(options: ProgressOptions): Progress {
  let total: ProgressTotal | undefined;
  const setTotal = (next: ProgressTotal | undefined) => {
    total = next !== undefined && next.objects > 0 ? next : undefined;
  };
  setTotal(options.total);
  const started = Date.now();
  let latest: Totals | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let write: (t: Totals) => void = () => {};
  const tick = () => {
    if (latest !== undefined) write(latest);
  };
  const update = (t: Totals) => {
    const first = latest === undefined;
    latest = t;
    if (first) {
      tick();
      // unref: a run that forgets to stop its progress still exits.
      ticker = setInterval(tick, TICK_MS).unref();
    }
  };
  const halt = () => {
    if (ticker !== undefined) clearInterval(ticker);
    ticker = undefined;
  };
  if (options.json) {
    const out = options.writeJson ?? ((line: string) => process.stdout.write(line));
    write = (t) => {
      const known = shownTotal(t, total);
      const { rate, etaSeconds } = pace(t, started, known);
      out(
        `${JSON.stringify({
          event: 'progress',
          phase: options.label,
          ...t,
          ...(known === undefined ? {} : { totalObjects: known.objects }),
          ...(known?.estimated === true ? { totalEstimated: true } : {}),
          ...(known?.bytes === undefined ? {} : { totalBytes: known.bytes }),
          rate: Math.round(rate),
          ...(etaSeconds === undefined ? {} : { etaSeconds }),
        })}\n`,
      );
    };
    // The result object that follows carries the final totals.
    return { update, stop: halt, setTotal };
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
    if (known.objects !== bar.getTotal()) bar.setTotal(known.objects);
    bar.update(done(t), {
      bytes: bytesText(t, known),
      rate: pace(t, started, known).rate.toFixed(0),
      failed: t.failed,
    });
  };
  const line = (t: Totals) => {
    const known = shownTotal(t, total);
    const { rate, etaSeconds } = pace(t, started, known);
    const of =
      known === undefined ? '' : `/${known.estimated === true ? 'about ' : ''}${known.objects}`;
    process.stderr.write(
      `${options.label}: ${done(t)}${of} objects (${t.copied} copied, ${t.skipped} unchanged, ${t.failed} failed), ${bytesText(t, known)}, ${rate.toFixed(0)} objects/s${etaSeconds === undefined ? '' : `, ETA ${etaSeconds} s`}\n`,
    );
  };
  write = (t) => {
    const known = shownTotal(t, total);
    if (process.stderr.isTTY && known !== undefined) showBar(t, known);
    else line(t);
  };
  return {
    update,
    stop(t) {
      halt();
      const known = shownTotal(t, total);
      if (bar !== undefined && known !== undefined) {
        showBar(t, known);
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
