import { type Config, config } from "./config.ts";
import { errorMessage, log } from "./log.ts";
import { keepAlive } from "./metrics.ts";

/**
 * Error tracking through the official `@sentry/deno` SDK, for what a log line alone would bury:
 * the errors that become `500 internal` and the background jobs that fail.
 *
 * Without `SENTRY_DSN` nothing is sent and the SDK is never loaded; with it, the SDK is imported
 * on the first report (never at boot, so the cold start does not grow) and each report leaves
 * after the response, kept alive with `EdgeRuntime.waitUntil`. An event carries the error and
 * its tags (function, request id, user id, release, environment) and nothing else: no request,
 * no headers, no body, no email, no token, no prompt. The SDK's default integrations, which
 * would add request data, breadcrumbs of fetch URLs and console lines, are off.
 */

export interface ErrorTags {
  function: string;
  request_id?: string;
  user_id?: string | null;
  job_type?: string;
  job_id?: string;
}

type SentryModule = typeof import("@sentry/deno");

let loading: Promise<SentryModule> | undefined;

function sentryFor(c: Config & { SENTRY_DSN: string }): Promise<SentryModule> {
  loading ??= import("@sentry/deno").then((Sentry) => {
    Sentry.init({
      dsn: c.SENTRY_DSN,
      release: c.SENTRY_RELEASE ?? c.APP_VERSION,
      environment: c.SENTRY_ENVIRONMENT,
      defaultIntegrations: false,
      sendDefaultPii: false,
      tracesSampleRate: 0,
      // Whatever a future SDK version adds on its own, only the error and its tags leave.
      beforeSend(event) {
        delete event.request;
        delete event.extra;
        delete event.breadcrumbs;
        delete event.contexts;
        event.user = event.user?.id ? { id: event.user.id } : undefined;
        return event;
      },
    });
    return Sentry;
  });
  return loading;
}

const FLUSH_TIMEOUT_MS = 2_000;

/** Reports an error to Sentry after the response; does nothing without `SENTRY_DSN`. */
export function reportError(error: unknown, tags: ErrorTags) {
  let c: Config;
  try {
    c = config();
  } catch {
    return;
  }
  if (!c.SENTRY_DSN) return;
  const dsn = c.SENTRY_DSN;
  const report = (async () => {
    const Sentry = await sentryFor({ ...c, SENTRY_DSN: dsn });
    const { user_id, ...rest } = tags;
    const tagValues = Object.fromEntries(
      Object.entries(rest).filter(([, value]) => value !== undefined),
    ) as Record<string, string>;
    Sentry.captureException(error, {
      tags: tagValues,
      user: user_id ? { id: user_id } : undefined,
    });
    await Sentry.flush(FLUSH_TIMEOUT_MS);
  })().catch((failure) => {
    log.warn("error report not sent", { error: errorMessage(failure) });
  });
  keepAlive(report);
}
