import assert from "node:assert/strict";
import { HistoryResponse } from "../_shared/contracts.ts";
import { callHandler, createUser, database, stackTest } from "../../../tests/support.ts";
import { handler } from "./handler.ts";

/** The page as the contract parses it, and the analysis types on it in order. */
function analysesPage(body: unknown) {
  const page = HistoryResponse.parse(body);
  assert.ok(page.type === "analyses");
  return { ...page, types: page.items.map((item) => item.analysis_type) };
}

stackTest("history called in-process pages a user's analyses newest first", async () => {
  const user = await createUser("inproc-history");
  const sql = database();
  try {
    await sql`
      insert into public.analyses
        (user_id, analysis_type, input_kind, input_hash, result, model, cached, created_at)
      select ${user.id}, 'text-' || n, 'text', encode(sha256(n::text::bytea), 'hex'),
             ${sql.json({ summary: "s", scores: {}, findings: [], recommendations: [] })},
             'test-model', false, now() - n * interval '1 minute'
        from generate_series(1, 3) as n`;
  } finally {
    await sql.end();
  }

  const first = await callHandler(handler, "history?type=analyses&limit=2", { user });
  assert.equal(first.status, 200);
  const page = analysesPage(await first.json());
  assert.deepEqual(page.types, ["text-1", "text-2"]);
  assert.equal(page.has_more, true);

  const cursor = encodeURIComponent(page.next_cursor!);
  const second = await callHandler(handler, `history?type=analyses&limit=2&cursor=${cursor}`, {
    user,
  });
  const rest = analysesPage(await second.json());
  assert.deepEqual(rest.types, ["text-3"]);
  assert.equal(rest.has_more, false);
});
