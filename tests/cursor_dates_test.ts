import assert from "node:assert/strict";
import { type CursorKind, encodeCursor } from "../supabase/functions/_shared/cursor.ts";
import { appClient, createUser, invoke, stackTest, type TestUser } from "./support.ts";

/**
 * A cursor is opaque to the app but not to a forger: one whose instant matches the format yet
 * names a day Postgres has no such thing as is a bad request, never a database error.
 */

const IMPOSSIBLE_INSTANTS = {
  "year 0000": "0000-01-01T00:00:00.000000Z",
  "February 30": "2026-02-30T12:00:00.000000Z",
  "April 31": "2026-04-31T12:00:00.000000Z",
  "month 13": "2026-13-01T00:00:00.000000Z",
  "hour 24": "2026-01-01T24:00:00.000000Z",
};

function forged(kind: CursorKind, instant: string) {
  return encodeCursor(kind, { created_at: instant, id: crypto.randomUUID() });
}

async function assertRefused(user: TestUser, path: string, field: string, what: string) {
  const { status, body } = await invoke(appClient(user.token), path, { method: "GET" });
  assert.equal(status, 400, `${what}: ${JSON.stringify(body)}`);
  assert.equal(body.error.code, "validation_failed", what);
  assert.equal(body.error.field, field, what);
}

stackTest(
  "history answers 400 validation_failed to a cursor dated on a day that does not exist",
  async () => {
    const user = await createUser("cursor-history");
    for (const [what, instant] of Object.entries(IMPOSSIBLE_INSTANTS)) {
      for (const type of ["analyses", "messages"] as const) {
        const cursor = encodeURIComponent(forged(type, instant));
        await assertRefused(
          user,
          `history?type=${type}&cursor=${cursor}`,
          "cursor",
          `${type}, ${what}`,
        );
      }
    }
  },
);

stackTest(
  "sync answers 400 validation_failed to a since cursor dated on a day that does not exist",
  async () => {
    const user = await createUser("cursor-sync");
    for (const [what, instant] of Object.entries(IMPOSSIBLE_INSTANTS)) {
      const since = encodeURIComponent(forged("sync", instant));
      await assertRefused(user, `sync?since=${since}`, "since", what);
    }
  },
);

stackTest(
  "history and sync accept cursors at the first and last instants a cursor can name",
  async () => {
    const user = await createUser("cursor-bounds");
    for (const instant of ["0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z"]) {
      const history = await invoke(
        appClient(user.token),
        `history?type=analyses&cursor=${forged("analyses", instant)}`,
        { method: "GET" },
      );
      assert.equal(history.status, 200, `history at ${instant}: ${JSON.stringify(history.body)}`);
      const sync = await invoke(appClient(user.token), `sync?since=${forged("sync", instant)}`, {
        method: "GET",
      });
      assert.equal(sync.status, 200, `sync at ${instant}: ${JSON.stringify(sync.body)}`);
    }
  },
);
