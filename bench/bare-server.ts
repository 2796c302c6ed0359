/**
 * The baseline the benchmarks compare against: a bare `Deno.serve` answering a fixed JSON body
 * of the same size as the function under test, with no pipeline at all.
 */
const body = Deno.args[0] ?? '{"status":"ok"}';

Deno.serve({
  hostname: "127.0.0.1",
  port: 0,
  onListen: ({ port }) => console.log(JSON.stringify({ port })),
}, () => new Response(body, { headers: { "content-type": "application/json; charset=utf-8" } }));
