import assert from "node:assert/strict";
import type { z } from "zod";
import {
  AnalyzeRequest,
  BillingRequest,
  ChatRequest,
  HistoryQuery,
  isStorableText,
  ProfileUpdateRequest,
  SyncQuery,
} from "./contracts.ts";

/** A valid example of every request contract: body or query string of each function. */
const EXAMPLES: [string, z.ZodType, Record<string, unknown>][] = [
  ["analyze (text)", AnalyzeRequest, {
    analysis_type: "clarity",
    input: { kind: "text", text: "Is this clear?" },
  }],
  ["analyze (image URL)", AnalyzeRequest, {
    analysis_type: "clarity",
    input: { kind: "image_url", url: "https://example.test/a.png" },
  }],
  ["chat", ChatRequest, { conversation_id: crypto.randomUUID(), message: "Hello" }],
  ["profile", ProfileUpdateRequest, {
    settings: { locale: "en-US", theme: "dark", default_analysis_type: "clarity" },
  }],
  ["history", HistoryQuery, { type: "analyses", limit: "20", cursor: "abc" }],
  ["sync", SyncQuery, { since: "abc" }],
  ["billing", BillingRequest, { action: "checkout", plan: "pro" }],
];

/** Every path to a string in `value`. */
function stringPaths(value: unknown, path: string[] = []): string[][] {
  if (typeof value === "string") return [path];
  if (value && typeof value === "object") {
    return Object.entries(value).flatMap(([key, item]) => stringPaths(item, [...path, key]));
  }
  return [];
}

function withString(value: unknown, path: string[], map: (text: string) => string): unknown {
  if (path.length === 0) return map(value as string);
  const copy = { ...(value as Record<string, unknown>) };
  copy[path[0]] = withString(copy[path[0]], path.slice(1), map);
  return copy;
}

Deno.test("every example of a request contract is valid as it is", () => {
  for (const [name, schema, example] of EXAMPLES) {
    assert.ok(schema.safeParse(example).success, name);
  }
});

Deno.test("no request contract accepts U+0000 or a lone surrogate in any of its strings", () => {
  for (const [name, schema, example] of EXAMPLES) {
    for (const path of stringPaths(example)) {
      for (const bad of ["\u0000", "\ud800", "\udc00"]) {
        const result = schema.safeParse(withString(example, path, (text) => text + bad));
        assert.ok(!result.success, `${name}: ${path.join(".")} accepted ${JSON.stringify(bad)}`);
        assert.deepEqual(result.error.issues[0].path, path, `${name}: the field is named`);
      }
    }
  }
});

Deno.test("text with properly paired surrogates (emoji) is storable", () => {
  assert.ok(isStorableText("progress 💪 photo"));
  assert.ok(!isStorableText("half \ud83d"));
  assert.ok(!isStorableText("\ude00 reversed \ud83d"));
});
