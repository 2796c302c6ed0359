// The example of docs/functions.md ("Writing a function"), as a real, type-checked handler. In a
// function of your own it is `supabase/functions/<name>/handler.ts`, importing from `../_shared/`.
import { z } from "zod";
import { Text } from "../../supabase/functions/_shared/contracts.ts";
import { json } from "../../supabase/functions/_shared/http.ts";
import { defineFunction } from "../../supabase/functions/_shared/pipeline.ts";

export const handler = defineFunction(
  {
    name: "example",
    methods: ["POST"],
    auth: "user",
    rateLimit: "general",
    body: z.strictObject({ text: Text.min(1).max(1_000) }),
  },
  async ({ caller, body, sql }) => {
    const [{ analyses }] = await sql<{ analyses: number }[]>`
      select count(*)::int as analyses from public.analyses where user_id = ${caller.id}`;
    return json({ user: caller.id, length: body.text.length, analyses });
  },
);
