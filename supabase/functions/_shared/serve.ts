import { originList, preflight } from "./cors.ts";
import type { Handler } from "./pipeline.ts";

/**
 * What a function's `index.ts` runs: `Deno.serve` over its handler, whose module (and the npm
 * packages behind it) loads on the first request that needs it. A CORS preflight, often the
 * first request a fresh isolate gets from a browser, is answered from here without it, then the
 * loading starts, so the request the preflight announced finds the handler ready or nearly so.
 */
export function serve(load: () => Promise<{ handler: Handler }>): void {
  let handler: Promise<Handler> | undefined;
  const loaded = () =>
    handler ??= load().then((module) => module.handler).catch((error) => {
      handler = undefined;
      throw error;
    });
  let origins: string[] | undefined;

  Deno.serve(async (req) => {
    if (req.method === "OPTIONS") {
      // The same list config.ts validates; a preflight must not wait for its schema library.
      origins ??= originList(Deno.env.get("ALLOWED_ORIGINS") ?? "");
      setTimeout(() => loaded().catch(() => {}));
      return preflight(req, origins);
    }
    // A module that fails to load fails this request (as it would have failed the boot) and is
    // tried again on the next.
    return (await loaded())(req);
  });
}
