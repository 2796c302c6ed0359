import assert from "node:assert/strict";
import { ApiError } from "./errors.ts";
import { decodeCursor, encodeCursor } from "./cursor.ts";

const id = "0b7c4c57-5a3b-4d4f-9b7e-3f4cbd0e9a11";

for (
  const [what, instant] of [
    ["year 0000", "0000-01-01T00:00:00.000000Z"],
    ["February 29 of a common year", "2026-02-29T00:00:00.000000Z"],
    ["September 31", "2026-09-31T00:00:00.000000Z"],
    ["hour 24", "2026-01-01T24:00:00.000000Z"],
  ]
) {
  Deno.test(`a cursor dated ${what} is refused as validation_failed naming the field`, () => {
    const cursor = encodeCursor("sync", { created_at: instant, id });
    assert.throws(
      () => decodeCursor("sync", cursor, "since"),
      (error) =>
        error instanceof ApiError && error.code === "validation_failed" &&
        error.details.field === "since",
    );
  });
}

Deno.test("a cursor dated February 29 of a leap year is accepted", () => {
  const position = { created_at: "2028-02-29T23:59:59.999999Z", id };
  assert.deepEqual(
    decodeCursor("analyses", encodeCursor("analyses", position), "cursor"),
    position,
  );
});
