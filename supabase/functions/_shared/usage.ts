import type { Sql } from "./db.ts";
import { ApiError } from "./errors.ts";

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

/** Gives units back when the work they paid for failed. */
export async function refundUsage(sql: Sql, userId: string, amount = 1): Promise<Usage> {
  const [row] = await sql<UsageRow[]>`
    select allowed, used, quota, remaining, period_resets_at
      from public.refund_usage(${userId}, ${amount})`;
  return usageOf(row);
}
