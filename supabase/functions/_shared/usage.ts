import postgres from "postgres";
import type { Sql } from "./db.ts";
import { ApiError } from "./errors.ts";
import { errorMessage, log } from "./log.ts";

/**
 * Metering against the monthly quota. The decision and the record are one database statement
 * (`increment_usage_if_allowed`), so concurrent requests can never spend more than the quota.
 */

export interface Usage {
  used: number;
  quota: number;
  remaining: number;
  resets_at: string;
}

interface UsageRow {
  allowed: boolean;
  used: number;
  quota: number;
  remaining: number;
  period_resets_at: Date;
}

const usageOf = (row: UsageRow): Usage => ({
  used: row.used,
  quota: row.quota,
  remaining: row.remaining,
  resets_at: row.period_resets_at.toISOString(),
});

/** Takes `amount` units or refuses with 402 `quota_exceeded` carrying the numbers. */
export async function takeUsage(sql: Sql, userId: string, amount = 1): Promise<Usage> {
  const [row] = await sql<UsageRow[]>`
    select allowed, used, quota, remaining, period_resets_at
      from public.increment_usage_if_allowed(${userId}, ${amount})`;
  const usage = usageOf(row);
  if (!row.allowed) {
    throw new ApiError("quota_exceeded", "the monthly quota is used up", {
      used: usage.used,
      quota: usage.quota,
      resets_at: usage.resets_at,
    });
  }
  return usage;
}

/**
 * Gives units back when the work they paid for failed. With `chargedUntil` (the `resets_at` the
 * charge returned) nothing is refunded if that period has ended meanwhile: units of last month
 * must not become extra units of this one.
 */
export async function refundUsage(
  sql: Sql,
  userId: string,
  amount = 1,
  chargedUntil?: string,
): Promise<Usage> {
  const [row] = await sql<UsageRow[]>`
    select allowed, used, quota, remaining, period_resets_at
      from public.refund_usage(${userId}, ${amount}, ${chargedUntil ?? null})`;
  return usageOf(row);
}

/**
 * After the work a charge paid for failed: gives the unit back and returns the error to answer
 * with, carrying the refunded `usage` when it is an ApiError. A refund that fails itself is
 * logged (the unit is then lost to the user) and the original error still answered.
 */
export async function refundAfterFailure(
  sql: Sql,
  userId: string,
  charged: Usage,
  error: unknown,
  requestId: string,
): Promise<unknown> {
  let usage: Usage;
  try {
    usage = await refundUsage(sql, userId, 1, charged.resets_at);
  } catch (refundError) {
    log.error("usage refund failed", {
      request_id: requestId,
      user_id: userId,
      error: errorMessage(refundError),
    });
    return error;
  }
  if (!(error instanceof ApiError)) return error;
  return new ApiError(error.code, error.message, { ...error.details, usage }, error.headers);
}

/**
 * The numbers as they stand, without taking anything (for answers that cost nothing). A period
 * that has ended counts as a new, unused one, as the next charge will see it.
 */
export async function currentUsage(sql: Sql, userId: string): Promise<Usage> {
  try {
    const [row] = await sql<UsageRow[]>`
      select allowed, used, quota, remaining, period_resets_at
        from public.current_usage(${userId})`;
    return usageOf(row);
  } catch (error) {
    throw accountGone(error);
  }
}

/** The metering functions' "no profile for user" (P0002) is an account deleted meanwhile. */
function accountGone(error: unknown): unknown {
  if (error instanceof postgres.PostgresError && error.code === "P0002") {
    return new ApiError("unauthorized", "this account no longer exists");
  }
  return error;
}
