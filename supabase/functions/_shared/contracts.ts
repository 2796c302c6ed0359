import { z } from "zod";

/**
 * Every request and response body of every function, as zod schemas. The functions validate
 * what they accept and build what they return from these; the Expo app's client imports this
 * same file, so both ends agree by construction. It imports nothing but zod: no Deno API, so it
 * bundles in React Native.
 */

// ---------------------------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------------------------

/**
 * True when Postgres can store `value` as `text`: no U+0000 (SQLSTATE 22021) and no UTF-16
 * surrogate without its pair (which cannot be encoded as UTF-8). A loop rather than
 * `String.prototype.isWellFormed`, which the app's JavaScript engine may not have.
 */
export function isStorableText(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if (unit === 0) return false;
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = value.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    } else if (unit >= 0xdc00 && unit <= 0xdfff) {
      return false;
    }
  }
  return true;
}

/**
 * Every string a request carries: text that would make Postgres refuse the row after the model
 * was paid for is refused at the door instead, with the field named.
 */
export const Text = z.string().refine(isStorableText, {
  error: "must not contain U+0000 or unpaired UTF-16 surrogates",
  abort: true,
});

export const ERROR_CODES = [
  "invalid_json",
  "validation_failed",
  "invalid_signature",
  "unauthorized",
  "quota_exceeded",
  "forbidden",
  "not_found",
  "method_not_allowed",
  "conflict",
  "payload_too_large",
  "rate_limited",
  "internal",
  "unavailable",
  "ai_unavailable",
  "billing_unavailable",
] as const;

/** `{"error":{"code","message","request_id",...details}}`, the body of every failure. */
export const ErrorEnvelope = z.object({
  error: z.looseObject({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    request_id: z.string(),
  }),
});
export type ErrorEnvelope = z.infer<typeof ErrorEnvelope>;

/** An IANA time zone name the runtime knows, such as `Europe/Berlin`. */
const TimeZone = Text.max(64).regex(/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/).refine(
  (zone) => {
    try {
      new Intl.DateTimeFormat("en", { timeZone: zone });
      return true;
    } catch {
      return false;
    }
  },
  { message: "must be a known IANA time zone" },
);
const ClockTime = Text.regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be HH:MM");

/** A profile's settings; the database enforces the same rules (`profile_settings_are_valid`). */
export const Settings = z.strictObject({
  locale: Text.regex(/^[a-z]{2}(-[A-Z]{2})?$/, "must look like en or en-US").optional(),
  theme: z.enum(["system", "light", "dark"]).optional(),
  notifications_enabled: z.boolean().optional(),
  default_analysis_type: Text.min(1).max(64).optional(),
  /** The user's IANA time zone, for what happens at a local hour (weekly recommendations). */
  timezone: TimeZone.optional(),
  /** No push notification between start and end ("HH:MM", local); they wait until the end. */
  quiet_hours: z.strictObject({ start: ClockTime, end: ClockTime, timezone: TimeZone }).optional(),
});
export type Settings = z.infer<typeof Settings>;

export const PlanId = z.enum(["free", "pro", "team"]);

export const Plan = z.object({
  id: z.string(),
  name: z.string(),
  monthly_quota: z.number().int(),
  ai_per_minute: z.number().int(),
  general_per_minute: z.number().int(),
  upload_per_minute: z.number().int(),
  /** Output tokens one model call may produce. */
  max_output_tokens: z.number().int(),
  /** Characters of earlier messages a chat message is sent with. */
  chat_history_chars: z.number().int(),
  /** Units an answer from the AI response cache takes from the quota. */
  cache_hit_cost: z.number().int(),
});
export type Plan = z.infer<typeof Plan>;

/** The monthly quota as it stands after the request that returned it. */
export const Usage = z.object({
  used: z.number().int(),
  quota: z.number().int(),
  remaining: z.number().int(),
  resets_at: z.iso.datetime({ offset: true }),
});
export type Usage = z.infer<typeof Usage>;

const Timestamp = z.iso.datetime({ offset: true });
/** An opaque position in a user's history, returned by `history` and `sync`. */
const Cursor = Text.min(1).max(512);

// ---------------------------------------------------------------------------------------------
// health
// ---------------------------------------------------------------------------------------------

/** Public on purpose, so nothing but the verdict: the reason is in the log under the request id. */
const Check = z.enum(["ok", "down"]);

export const HealthResponse = z.object({
  status: z.enum(["ok", "degraded"]),
  checks: z.object({ database: Check, redis: Check }),
});
export type HealthResponse = z.infer<typeof HealthResponse>;

// ---------------------------------------------------------------------------------------------
// profile
// ---------------------------------------------------------------------------------------------

export const ProfileResponse = z.object({
  id: z.uuid(),
  email: z.string().nullable(),
  plan: Plan,
  settings: Settings,
  subscription_status: z.string().nullable(),
});
export type ProfileResponse = z.infer<typeof ProfileResponse>;

/** `PATCH profile`: the settings to change; keys left out keep their value. */
export const ProfileUpdateRequest = z.strictObject({ settings: Settings });
export type ProfileUpdateRequest = z.infer<typeof ProfileUpdateRequest>;

export const ProfileDeleteResponse = z.object({ deleted: z.literal(true) });
export type ProfileDeleteResponse = z.infer<typeof ProfileDeleteResponse>;

// ---------------------------------------------------------------------------------------------
// usage
// ---------------------------------------------------------------------------------------------

export const RateWindow = z.object({
  limit: z.number().int(),
  remaining: z.number().int(),
  resets_at: Timestamp,
});

export const UsageResponse = z.object({
  usage: Usage,
  rate_limits: z.object({ ai: RateWindow, general: RateWindow, upload: RateWindow }),
});
export type UsageResponse = z.infer<typeof UsageResponse>;

// ---------------------------------------------------------------------------------------------
// history and sync
// ---------------------------------------------------------------------------------------------

export const AnalysisResult = z.object({
  summary: z.string().max(4_000),
  scores: z.record(z.string().max(64), z.number().min(0).max(100)),
  findings: z.array(z.object({
    title: z.string().max(200),
    detail: z.string().max(2_000),
    severity: z.enum(["low", "medium", "high"]),
  })).max(50),
  recommendations: z.array(z.string().max(1_000)).max(50),
});
export type AnalysisResult = z.infer<typeof AnalysisResult>;

export const AnalysisStatus = z.enum(["pending", "done", "failed"]);

/**
 * An analysis; `result` is there once it is `done`. A background analysis is `pending` until
 * its job ends, and its `created_at` is then the moment its result (or failure) was stored.
 */
export const AnalysisItem = z.object({
  id: z.uuid(),
  created_at: Timestamp,
  status: AnalysisStatus,
  analysis_type: z.string(),
  input_kind: z.enum(["text", "image_url", "image_base64", "storage"]).nullable(),
  /** For input_kind `storage`: `<bucket>/<path>` of the analysed object. */
  input_path: z.string().nullable(),
  model: z.string().nullable(),
  cached: z.boolean(),
  result: AnalysisResult.nullable(),
});
export type AnalysisItem = z.infer<typeof AnalysisItem>;

export const MessageItem = z.object({
  id: z.uuid(),
  created_at: Timestamp,
  conversation_id: z.uuid(),
  role: z.enum(["user", "assistant"]),
  content: z.string(),
  model: z.string().nullable(),
});
export type MessageItem = z.infer<typeof MessageItem>;

/** `GET history?type=&limit=&cursor=&conversation_id=` (query string). */
export const HistoryQuery = z.strictObject({
  type: z.enum(["analyses", "messages"]).default("analyses"),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: Cursor.optional(),
  conversation_id: z.uuid().optional(),
  /** One analysis by id (type=analyses): a page of it alone, or 404. */
  id: z.uuid().optional(),
});
export type HistoryQuery = z.infer<typeof HistoryQuery>;

export const HistoryResponse = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("analyses"),
    items: z.array(AnalysisItem),
    next_cursor: Cursor.nullable(),
    has_more: z.boolean(),
  }),
  z.object({
    type: z.literal("messages"),
    items: z.array(MessageItem),
    next_cursor: Cursor.nullable(),
    has_more: z.boolean(),
  }),
]);
export type HistoryResponse = z.infer<typeof HistoryResponse>;

// ---------------------------------------------------------------------------------------------
// activities and statistics: the caller's own activity log and statistics
// ---------------------------------------------------------------------------------------------

/** `GET activities?limit=&cursor=` (query string). */
export const ActivitiesQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: Cursor.optional(),
});
export type ActivitiesQuery = z.infer<typeof ActivitiesQuery>;

/** One entry of the activity log (`kind`: `analysis`, `chat`, `purchase`, ...). */
export const ActivityItem = z.object({
  id: z.uuid(),
  created_at: Timestamp,
  kind: z.string(),
  detail: z.record(z.string(), z.unknown()),
});
export type ActivityItem = z.infer<typeof ActivityItem>;

export const ActivitiesResponse = z.object({
  items: z.array(ActivityItem),
  next_cursor: Cursor.nullable(),
  has_more: z.boolean(),
});
export type ActivitiesResponse = z.infer<typeof ActivitiesResponse>;

/**
 * The caller's statistics: counts as of the last hourly refresh (`refreshed_at`), usage and
 * quota live.
 */
export const UserStatistics = z.object({
  plan_id: PlanId,
  analyses_count: z.number().int().nonnegative(),
  chat_messages_count: z.number().int().nonnegative(),
  last_analysis_at: Timestamp.nullable(),
  last_chat_message_at: Timestamp.nullable(),
  last_activity_at: Timestamp.nullable(),
  used_this_period: z.number().int().nonnegative(),
  monthly_quota: z.number().int().nonnegative(),
  period_resets_at: Timestamp,
  member_since: Timestamp,
});
export type UserStatistics = z.infer<typeof UserStatistics>;

/** `statistics` is null until the first refresh after the account was made. */
export const StatisticsResponse = z.object({
  statistics: UserStatistics.nullable(),
  refreshed_at: Timestamp.nullable(),
});
export type StatisticsResponse = z.infer<typeof StatisticsResponse>;

/** `GET sync?since=` (query string); without `since`, everything recent. */
export const SyncQuery = z.strictObject({ since: Cursor.optional() });
export type SyncQuery = z.infer<typeof SyncQuery>;

export const SyncResponse = z.object({
  analyses: z.array(AnalysisItem),
  messages: z.array(MessageItem),
  profile: ProfileResponse,
  usage: Usage,
  cursor: Cursor,
  /** When to ask again: sooner for users active lately. */
  next_sync_in_s: z.number().int().positive(),
});
export type SyncResponse = z.infer<typeof SyncResponse>;

// ---------------------------------------------------------------------------------------------
// analyze and chat (metered)
// ---------------------------------------------------------------------------------------------

export const MAX_BASE64_IMAGE_CHARS = 5_000_000;

/** The Storage buckets the app uploads into (their limits are the buckets' own, in the database). */
export const UPLOAD_BUCKETS = ["user-uploads", "avatars"] as const;
export const UploadBucket = z.enum(UPLOAD_BUCKETS);
export type UploadBucket = z.infer<typeof UploadBucket>;

/**
 * An object's name inside its bucket: the owner's user id, then segments of letters, digits,
 * `_`, `-` and `.` that never start with a dot, so no `..`, no empty segment, no escapes.
 */
export const StoragePath = Text.max(1024).regex(
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$/,
  "must be <user id>/<folder>/<file> without . or .. segments",
);

export const AnalyzeInput = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("text"), text: Text.min(1).max(20_000) }),
  z.strictObject({
    kind: z.literal("image_url"),
    url: Text.pipe(z.url({ protocol: /^https$/, error: "must be an https URL" }).max(4_096)),
  }),
  z.strictObject({
    kind: z.literal("image_base64"),
    media_type: z.enum(["image/jpeg", "image/png", "image/webp", "image/gif"]),
    data: z.base64().max(MAX_BASE64_IMAGE_CHARS, "must be at most 5 MB of base64"),
  }),
  /** An image the caller uploaded to Storage (see `uploads`); the model gets a 5-minute URL. */
  z.strictObject({ kind: z.literal("storage"), bucket: UploadBucket, path: StoragePath }),
]);
export type AnalyzeInput = z.infer<typeof AnalyzeInput>;

/**
 * The `Idempotency-Key` header of a background analysis: the same key answers with the same
 * analysis instead of a second charge. It is stored with the job, so it is held to a length.
 */
export const IdempotencyKey = Text.min(1).max(128);

export const AnalyzeRequest = z.strictObject({
  analysis_type: Text.min(1).max(64),
  input: AnalyzeInput,
  /**
   * `background` answers 202 `AnalyzeAccepted` at once and analyses in a job (the default for
   * `storage` inputs); `sync` answers with the analysis.
   */
  mode: z.enum(["sync", "background"]).optional(),
});
export type AnalyzeRequest = z.infer<typeof AnalyzeRequest>;

/** A finished analysis, as `analyze` answers it. */
export const DoneAnalysis = AnalysisItem.extend({
  status: z.literal("done"),
  result: AnalysisResult,
});
export type DoneAnalysis = z.infer<typeof DoneAnalysis>;

export const AnalyzeResponse = z.object({
  analysis: DoneAnalysis,
  /** True when the result came from the AI response cache rather than the model. */
  cached: z.boolean(),
  usage: Usage,
});
export type AnalyzeResponse = z.infer<typeof AnalyzeResponse>;

/** `analyze` in the background (202): follow it with `history?id=` or `sync`. */
export const AnalyzeAccepted = z.object({ analysis_id: z.uuid(), status: z.literal("pending") });
export type AnalyzeAccepted = z.infer<typeof AnalyzeAccepted>;

export const ChatRequest = z.strictObject({
  /** Omit to start a new conversation. */
  conversation_id: z.uuid().optional(),
  message: Text.min(1).max(8_000),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

export const ChatResponse = z.object({
  conversation_id: z.uuid(),
  reply: MessageItem,
  cached: z.boolean(),
  usage: Usage,
});
export type ChatResponse = z.infer<typeof ChatResponse>;

/**
 * With `Accept: text/event-stream`, `chat` answers with server-sent events: any number of
 * `event: delta` (data `{"text": "..."}`), then one `event: done` whose data is a ChatResponse,
 * or one `event: error` whose data is an ErrorEnvelope.
 */
export const ChatDelta = z.object({ text: z.string() });

// ---------------------------------------------------------------------------------------------
// uploads
// ---------------------------------------------------------------------------------------------

/**
 * `POST uploads`: a signed upload URL for one object of `content_type` and `size_bytes`, under
 * the caller's storage quota. The server chooses the path: `<user id>/<purpose>/<uuid>.<ext>`.
 */
export const UploadRequest = z.strictObject({
  bucket: UploadBucket,
  content_type: Text.min(1).max(255),
  size_bytes: z.number().int().positive().max(50 * 1024 * 1024),
  purpose: Text.regex(/^[a-z][a-z0-9_-]{0,31}$/, "must be a lowercase word such as progress"),
});
export type UploadRequest = z.infer<typeof UploadRequest>;

export const UploadGrant = z.object({
  upload_id: z.uuid(),
  bucket: UploadBucket,
  /** The object's name in the bucket; what `analyze` and `DELETE uploads` take. */
  path: Text,
  /** PUT the bytes here (or `uploadToSignedUrl(path, token, file)`), before `expires_at`. */
  signed_url: z.url(),
  token: Text,
  expires_at: Timestamp,
});
export type UploadGrant = z.infer<typeof UploadGrant>;

/** `GET uploads?bucket=&limit=&cursor=` and `DELETE uploads?bucket=&path=` (query string). */
export const UploadsQuery = z.strictObject({
  bucket: UploadBucket.optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: Cursor.optional(),
  path: StoragePath.optional(),
});
export type UploadsQuery = z.infer<typeof UploadsQuery>;

export const StoredObject = z.object({
  bucket: UploadBucket,
  path: Text,
  size_bytes: z.number().int().nonnegative(),
  content_type: Text.nullable(),
  created_at: Timestamp,
});
export type StoredObject = z.infer<typeof StoredObject>;

export const UploadsPage = z.object({
  items: z.array(StoredObject),
  next_cursor: Cursor.nullable(),
  has_more: z.boolean(),
});
export type UploadsPage = z.infer<typeof UploadsPage>;

/** What `DELETE uploads` answers: the object is gone and its bytes are back in the quota. */
export const UploadDeleted = z.object({
  deleted: z.literal(true),
  storage: z.object({ used_bytes: z.number().int(), quota_bytes: z.number().int() }),
});
export type UploadDeleted = z.infer<typeof UploadDeleted>;

// ---------------------------------------------------------------------------------------------
// billing
// ---------------------------------------------------------------------------------------------

/**
 * `POST billing`: `checkout` answers with a Stripe Checkout URL for a paid plan, `portal` with
 * a Stripe Customer Portal URL (to change plan, card or cancel). Open either in the browser; it
 * returns to the app through the configured deep links.
 */
export const BillingRequest = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("checkout"), plan: PlanId.exclude(["free"]) }),
  z.strictObject({ action: z.literal("portal") }),
]);
export type BillingRequest = z.infer<typeof BillingRequest>;

export const BillingResponse = z.object({ url: z.url() });
export type BillingResponse = z.infer<typeof BillingResponse>;

/** What `stripe-webhook` answers Stripe once an event is verified (and recorded, if new). */
export const StripeWebhookResponse = z.object({ received: z.literal(true) });
export type StripeWebhookResponse = z.infer<typeof StripeWebhookResponse>;

// ---------------------------------------------------------------------------------------------
// jobs
// ---------------------------------------------------------------------------------------------

/**
 * `POST process-jobs` (service role): what one run did. `failed` jobs will be retried after a
 * backoff; `dead` ones used their last attempt.
 */
export const ProcessJobsResponse = z.object({
  claimed: z.number().int().nonnegative(),
  succeeded: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  dead: z.number().int().nonnegative(),
});
export type ProcessJobsResponse = z.infer<typeof ProcessJobsResponse>;

// ---------------------------------------------------------------------------------------------
// devices and recommendations
// ---------------------------------------------------------------------------------------------

/** `POST devices`: the Expo push token of this install (from `getExpoPushTokenAsync`). */
export const DeviceRequest = z.strictObject({
  expo_push_token: Text.min(1).max(255),
  platform: z.enum(["ios", "android", "web"]),
  app_version: Text.min(1).max(64).optional(),
});
export type DeviceRequest = z.infer<typeof DeviceRequest>;

export const Device = z.object({
  id: z.uuid(),
  expo_push_token: z.string(),
  platform: z.enum(["ios", "android", "web"]),
  app_version: z.string().nullable(),
  last_seen_at: Timestamp,
  created_at: Timestamp,
});
export type Device = z.infer<typeof Device>;

/** `DELETE devices?token=` (query string; required there). */
export const DevicesQuery = z.strictObject({ token: Text.min(1).max(255).optional() });
export type DevicesQuery = z.infer<typeof DevicesQuery>;

export const DeviceDeleted = z.object({ deleted: z.boolean() });
export type DeviceDeleted = z.infer<typeof DeviceDeleted>;

/** The latest weekly recommendations made for the caller, or null before the first. */
export const RecommendationsResponse = z.object({
  recommendation: z.object({
    id: z.uuid(),
    week: z.iso.date(),
    created_at: Timestamp,
    summary: z.string(),
    items: z.array(z.string()),
    analyses_count: z.number().int(),
  }).nullable(),
});
export type RecommendationsResponse = z.infer<typeof RecommendationsResponse>;
