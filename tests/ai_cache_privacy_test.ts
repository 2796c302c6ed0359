import assert from "node:assert/strict";
import { aiCacheRedisKey } from "../supabase/functions/_shared/ai-cache.ts";
import { fresh, modelStack } from "./ai_support.ts";
import {
  appClient,
  createUser,
  database,
  invoke,
  processJobs,
  stackTest,
  upstash,
} from "./support.ts";

/**
 * An AI-cache answer only ever comes back to the user whose request produced it, except text
 * analyses of a type the operator marked shareable; and deleting an account deletes its entries.
 */

const sql = database();
// Listed before the functions start, so their first read of the list already has it.
const SHAREABLE = `grammar-${crypto.randomUUID().slice(0, 8)}`;
await sql`insert into public.ai_shareable_analysis_types (analysis_type) values (${SHAREABLE})`;
const ai = await modelStack();

stackTest(
  "the same chat message from another user is answered by the model, not the cache",
  async () => {
    const [first, second] = [await createUser("cache-a"), await createUser("cache-b")];
    const message = fresh();
    assert.equal((await ai.chat(first.token, { message })).status, 200);
    const calls = ai.server.calls;

    const { status, body } = await ai.chat(second.token, { message });

    assert.equal(status, 200);
    assert.equal(body.cached, false);
    assert.equal(ai.server.calls, calls + 1);
  },
);

stackTest(
  "an analysis of a type not marked shareable is never served to another user",
  async () => {
    const [first, second] = [await createUser("cache-a"), await createUser("cache-b")];
    const request = { analysis_type: "diary", input: { kind: "text", text: fresh() } };
    assert.equal((await ai.analyze(first.token, request)).status, 200);
    assert.equal((await ai.analyze(first.token, request)).body.cached, true);

    const { body } = await ai.analyze(second.token, request);

    assert.equal(body.cached, false);
  },
);

stackTest(
  "a text analysis of a shareable type is served to every user from one entry",
  async () => {
    const [first, second] = [await createUser("cache-a"), await createUser("cache-b")];
    const request = { analysis_type: SHAREABLE, input: { kind: "text", text: fresh() } };
    assert.equal((await ai.analyze(first.token, request)).status, 200);
    const calls = ai.server.calls;

    const { body } = await ai.analyze(second.token, request);

    assert.equal(body.cached, true);
    assert.equal(ai.server.calls, calls);
    const owners = await sql<{ user_id: string | null }[]>`
    select user_id from public.ai_response_cache
     where value -> 'answer' ->> 'summary' like ${`%${request.input.text}%`}`;
    assert.deepEqual(owners.map((row) => row.user_id), [null]);
  },
);

stackTest(
  "deleting an account deletes its AI-cache entries from Postgres and, through the job, from Redis",
  async () => {
    const user = await createUser("cache-deleted");
    assert.equal((await ai.chat(user.token, { message: fresh() })).status, 200);
    assert.equal(
      (await ai.analyze(user.token, {
        analysis_type: "diary",
        input: { kind: "text", text: fresh() },
      }))
        .status,
      200,
    );
    const keys = (await sql<{ key: string }[]>`
      select key from public.ai_response_cache where user_id = ${user.id}`).map((row) => row.key);
    assert.equal(keys.length, 2);
    const inRedis = () => upstash().exists(...keys.map(aiCacheRedisKey));
    assert.equal(await inRedis(), 2);

    const deleted = await invoke(appClient(user.token, ai.gateway.url), "profile", {
      method: "DELETE",
    });
    assert.equal(deleted.status, 200);

    const [{ rows }] = await sql<{ rows: number }[]>`
      select count(*)::int as rows from public.ai_response_cache where key = any(${keys})`;
    assert.equal(rows, 0, "the rows went with the account");
    assert.equal((await processJobs(ai.gateway.url)).status, 200);
    assert.equal(await inRedis(), 0, "the job deleted the Redis copies");
    const [job] = await sql<{ status: string }[]>`
      select status from public.background_jobs
       where type = 'ai_cache.forget' and payload -> 'keys' ? ${keys[0]}`;
    assert.equal(job.status, "succeeded");
  },
);
