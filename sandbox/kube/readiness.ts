/**
 * The kubelet's readiness rule for the sandbox's pods: an exited process is
 * unready at once; a live one turns unready only after its probe has failed
 * several times in a row over a span of time, so one slow answer on a loaded
 * machine does not take the pod out of its Service.
 */

/**
 * Probe failures in a row before a live pod turns unready (the
 * readinessProbe's failureThreshold default).
 */
const FAILURE_THRESHOLD = 3;

/**
 * The kubelet probes every 10 s, so its three failures span 20 s or more. The
 * sandbox probes every round (a few hundred ms) to keep tests short, but still
 * asks the failures to span this long: three probes slowed in under a second
 * by a loaded CI machine do not empty the Service.
 */
const FAILURE_SPAN_MS = 3_000;

/** What the kubelet remembers of one container's readiness. */
export interface Readiness {
  ready: boolean;
  /** Probe failures in a row since the last success. */
  failures: number;
  /** When the first of those failures happened. */
  failingSince: number;
}

export const unready = (): Readiness => ({ ready: false, failures: 0, failingSince: 0 });

/** Records one probe of a container whose process is (or is not) `running`. */
export function observeProbe(state: Readiness, running: boolean, answered: boolean): void {
  if (answered) {
    state.failures = 0;
    state.ready = running;
    return;
  }
  if (state.failures === 0) state.failingSince = Date.now();
  state.failures++;
  const failedLong =
    state.failures >= FAILURE_THRESHOLD && Date.now() - state.failingSince >= FAILURE_SPAN_MS;
  state.ready = running && state.ready && !failedLong;
}
