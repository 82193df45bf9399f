/**
 * Copy progress for people: a bar with objects and bytes done, rate and ETA on
 * a terminal (cli-progress), plain lines every few seconds otherwise, nothing
 * extra with --json (the result object carries the totals).
 */
import { SingleBar } from 'cli-progress';
import type { Totals } from '../functions/commons/copy/model.ts';

export interface Progress {
  update(totals: Totals): void;
  stop(totals: Totals): void;
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

export function createProgress(options: { json: boolean; total: number; label: string }): Progress {
  if (options.json) return { update() {}, stop() {} };
  const done = (t: Totals) => t.copied + t.skipped + t.failed;
  // A bar needs a total; a workflow's copy (shards spread over workers) reports counts and rate only.
  if (process.stderr.isTTY && options.total > 0) {
    const bar = new SingleBar({
      format: `${options.label} [{bar}] {value}/{total} objects | {bytes} | {rate} obj/s | ETA {eta_formatted} | failed {failed}`,
      stream: process.stderr,
      hideCursor: true,
    });
    const started = Date.now();
    bar.start(Math.max(options.total, 1), 0, { bytes: mib(0), rate: '0', failed: 0 });
    return {
      update(t) {
        const seconds = Math.max((Date.now() - started) / 1000, 0.001);
        if (done(t) > bar.getTotal()) bar.setTotal(done(t));
        bar.update(done(t), {
          bytes: mib(t.bytesCopied),
          rate: (done(t) / seconds).toFixed(0),
          failed: t.failed,
        });
      },
      stop(t) {
        bar.update(done(t), { bytes: mib(t.bytesCopied), failed: t.failed });
        bar.stop();
      },
    };
  }
  let last = 0;
  const started = Date.now();
  const line = (t: Totals) =>
    process.stderr.write(
      `${options.label}: ${done(t)}${options.total > 0 ? `/${options.total}` : ''} objects (${t.copied} copied, ${t.skipped} unchanged, ${t.failed} failed), ${mib(t.bytesCopied)}, ${(done(t) / Math.max((Date.now() - started) / 1000, 0.001)).toFixed(0)} objects/s\n`,
    );
  return {
    update(t) {
      if (Date.now() - last >= 5_000) {
        last = Date.now();
        line(t);
      }
    },
    stop: line,
  };
}
