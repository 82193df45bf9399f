/**
 * The one logging interface every layer takes as a parameter: Powertools'
 * Logger on AWS, the CLI's reporter or nothing locally.
 */

/** Structured log lines; never given secrets. */
export interface StepLogger {
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
}

/** Logger that drops everything (tests that do not look at logs). */
export const silentLogger: StepLogger = { info() {}, warn() {} };
