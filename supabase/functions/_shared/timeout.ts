/**
 * Rejects after `ms`, so one slow dependency cannot hold a request past its budget.
 *
 * Every request on the hot path needs a deadline, and a timer per request is a measurable part of
 * its cost; instead all deadlines share one sweep that runs only while some are pending, which
 * fires each within `SWEEP_MS` after it is due.
 */

const SWEEP_MS = 25;

interface Deadline {
  at: number;
  expire: () => void;
}

const deadlines = new Set<Deadline>();
let sweeper: ReturnType<typeof setInterval> | undefined;

function sweep() {
  const now = Date.now();
  for (const deadline of deadlines) {
    if (deadline.at <= now) {
      deadlines.delete(deadline);
      deadline.expire();
    }
  }
  if (deadlines.size === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const deadline: Deadline = {
      at: Date.now() + ms,
      expire: () => reject(new Error(`${what} timed out after ${ms} ms`)),
    };
    deadlines.add(deadline);
    sweeper ??= setInterval(sweep, SWEEP_MS);
    promise.then(
      (value) => {
        deadlines.delete(deadline);
        resolve(value);
      },
      (error) => {
        deadlines.delete(deadline);
        reject(error);
      },
    );
  });
}
