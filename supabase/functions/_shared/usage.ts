import { z } from "zod";
import { Usage } from "./contracts.ts";
import { errorCode, type Sql } from "./db.ts";
import { ApiError } from "./errors.ts";
import { errorMessage, log } from "./log.ts";

/**
 * Metering against the monthly quota. The decision and the record are one database statement
 * (`increment_usage_if_allowed`), so concurrent requests can never spend more than the quota.
 */

/**
 * The row every metering function returns (`increment_usage_if_allowed`, `refund_usage`,
 * `current_usage`): the `Usage` contract's numbers, whether the call was allowed, and the end of
 * the period as the timestamp it is.
 */
const UsageRow = Usage.omit({ resets_at: true }).extend({
  allowed: z.boolean(),
  period_resets_at: z.date(),
});
type UsageRow = z.infer<typeof UsageRow>;

/** The columns of `UsageRow`, to select from a metering function. */
export const USAGE_COLUMNS = Object.keys(UsageRow.shape).join(", ");

/** A metering function's row, parsed: whether it was allowed, and the `Usage` to answer with. */
export function usageOf(row: unknown): { allowed: boolean; usage: Usage } {
  const { allowed, period_resets_at, ...numbers } = UsageRow.parse(row);
  return { allowed, usage: { ...numbers, resets_at: period_resets_at.toISOString() } };
}

/** Takes `amount` units or refuses with 402 `quota_exceeded` carrying the numbers. */
export async function takeUsage(sql: Sql, userId: string, amount = 1): Promise<Usage> {
  const [row] = await sql`
    select ${sql.unsafe(USAGE_COLUMNS)}
      from public.increment_usage_if_allowed(${userId}, ${amount})`;
  const { allowed, usage } = usageOf(row);
  if (!allowed) {
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
  const [row] = await sql`
    select ${sql.unsafe(USAGE_COLUMNS)}
      from public.refund_usage(${userId}, ${amount}, ${chargedUntil ?? null})`;
  return usageOf(row).usage;
}

/**
 * What one metered request paid, and the one rule for giving it back: the charge follows the
 * value delivered. While no model output has reached the client, a failure refunds the units
 * (once, however many failures follow); from the moment any output is on its way (a streamed
 * piece, or a 2xx body), the units stay spent whatever fails afterwards, and that failure is
 * logged with the request id. A background analysis keeps the same rule in SQL: its delivery is
 * the stored `done` analysis (`complete_background_analysis`), and its refund, when its job ends
 * dead, is `fail_background_analysis`, once (migration 20261206007200).
 */
export class Charge {
  #delivered = false;
  #settled = false;

  private constructor(
    private readonly sql: Sql,
    private readonly userId: string,
    private readonly requestId: string,
    readonly amount: number,
    readonly usage: Usage,
  ) {}

  /** Takes `amount` units before any model work, or refuses with 402 `quota_exceeded`. */
  static async take(sql: Sql, userId: string, requestId: string, amount = 1): Promise<Charge> {
    return new Charge(sql, userId, requestId, amount, await takeUsage(sql, userId, amount));
  }

  /** Model output is going to the client: from here on these units are never given back. */
  delivered(): void {
    this.#delivered = true;
  }

  /**
   * Delivers model output that `record` stores first. Storing may still fail (the database is
   * down, say): the output the caller paid for then goes out as `unrecorded`, and the failure is
   * logged rather than answered.
   */
  async deliver<T>(record: () => Promise<T>, unrecorded: () => T): Promise<T> {
    this.delivered();
    try {
      return await record();
    } catch (error) {
      await this.failed(error);
      return unrecorded();
    }
  }

  /**
   * The work this charge paid for failed with `error`: returns the error to answer with. Before
   * delivery the units are refunded (for the period they were taken in) and the error carries
   * the refunded `usage`; after delivery nothing is refunded. A refund that fails itself is
   * logged (the units are then lost to the user) and the original error still answered.
   */
  async failed(error: unknown): Promise<unknown> {
    const fields = { request_id: this.requestId, user_id: this.userId, error: errorMessage(error) };
    if (this.#delivered) {
      log.warn("failure after model output was delivered; the charge stands", fields);
      return error;
    }
    if (this.#settled) return error;
    this.#settled = true;
    let usage: Usage;
    try {
      usage = await refundUsage(this.sql, this.userId, this.amount, this.usage.resets_at);
    } catch (refundError) {
      log.error("usage refund failed", { ...fields, error: errorMessage(refundError) });
      return error;
    }
    if (!(error instanceof ApiError)) return error;
    return new ApiError(error.code, error.message, { ...error.details, usage }, error.headers);
  }
}

/**
 * The numbers as they stand, without taking anything (for answers that cost nothing). A period
 * that has ended counts as a new, unused one, as the next charge will see it.
 */
export async function currentUsage(sql: Sql, userId: string): Promise<Usage> {
  try {
    const [row] = await sql`
      select ${sql.unsafe(USAGE_COLUMNS)}
        from public.current_usage(${userId})`;
    return usageOf(row).usage;
  } catch (error) {
    throw accountGone(error);
  }
}

/** The metering functions' "no profile for user" (P0002) is an account deleted meanwhile. */
function accountGone(error: unknown): unknown {
  if (errorCode(error) === "P0002") {
    return new ApiError("unauthorized", "this account no longer exists");
  }
  return error;
}
