/**
 * Runs one function's `index.ts` in its own Deno process, the way the edge runtime gives each
 * function its own isolate. The function calls `Deno.serve(handler)` exactly as in production;
 * here that call is pointed at a free loopback port, which is reported to the gateway on stdout.
 */

export const LISTENING_MARKER = "__function_worker_listening__";

type ServeArgs = Parameters<typeof Deno.serve>;

if (import.meta.main) {
  const entry = Deno.args[0];
  if (!entry) throw new Error("usage: function-worker.ts <path to index.ts>");

  const serve = Deno.serve;
  Object.defineProperty(Deno, "serve", {
    value: (...args: ServeArgs) => {
      const [first, second] = args as unknown[];
      const handler = (typeof first === "function" ? first : second ??
        (first as { handler: unknown }).handler) as Deno.ServeHandler;
      return serve({
        hostname: "127.0.0.1",
        port: 0,
        onListen: ({ port }) => console.log(JSON.stringify({ [LISTENING_MARKER]: port })),
      }, handler);
    },
  });

  // The edge runtime's `EdgeRuntime.waitUntil` keeps background work (such as metrics writes)
  // alive after the response; on shutdown it fires `beforeunload` and lets that work finish.
  const background = new Set<Promise<unknown>>();
  Object.defineProperty(globalThis, "EdgeRuntime", {
    value: {
      waitUntil(promise: Promise<unknown>) {
        background.add(promise);
        promise.finally(() => background.delete(promise)).catch(() => {});
      },
    },
  });
  Deno.addSignalListener("SIGTERM", async () => {
    dispatchEvent(new Event("beforeunload"));
    const grace = new Promise((resolve) => setTimeout(resolve, 3_000));
    await Promise.race([Promise.allSettled([...background]), grace]);
    Deno.exit(0);
  });

  await import(new URL(entry, `file://${Deno.cwd()}/`).href);
}
