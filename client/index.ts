import {
  FunctionsFetchError,
  FunctionsHttpError,
  FunctionsRelayError,
  type SupabaseClient,
} from "@supabase/supabase-js";
import type { z } from "zod";
import {
  ActivitiesQuery,
  ActivitiesResponse,
  type AnalysisItem,
  AnalyzeAccepted,
  AnalyzeRequest,
  AnalyzeResponse,
  BillingRequest,
  BillingResponse,
  ChatDelta,
  ChatRequest,
  ChatResponse,
  Device,
  DeviceDeleted,
  DeviceRequest,
  DevicesQuery,
  ErrorEnvelope,
  HealthResponse,
  HistoryQuery,
  HistoryResponse,
  ProfileDeleteResponse,
  ProfileResponse,
  ProfileUpdateRequest,
  RecommendationsResponse,
  type Settings,
  StatisticsResponse,
  SyncQuery,
  SyncResponse,
  type UploadBucket,
  UploadDeleted,
  UploadGrant,
  UploadRequest,
  UploadsPage,
  UploadsQuery,
  UsageResponse,
} from "../supabase/functions/_shared/contracts.ts";
import {
  ApiClientError,
  fromAnswer,
  fromEnvelope,
  fromStorage,
  invalidArgument,
  noAnswer,
  unexpectedAnswer,
} from "./errors.ts";
import { serverSentEvents } from "./sse.ts";

/**
 * The typed client of the backend's functions, for the Expo app. Every method checks its
 * argument against the same zod contract the function checks (so a bad argument never leaves
 * the device), calls the function through `supabase.functions.invoke` (so the signed-in user's
 * token goes with it), checks the answer against its contract, and fails with one error type,
 * `ApiClientError`. See client/README.md.
 */

export {
  ApiClientError,
  type ApiClientErrorDetails,
  type ClientErrorCode,
  type QuotaState,
  type ServerErrorCode,
} from "./errors.ts";
export type {
  ActivitiesResponse,
  ActivityItem,
  AnalysisItem,
  AnalyzeAccepted,
  AnalyzeRequest,
  AnalyzeResponse,
  BillingResponse,
  ChatRequest,
  ChatResponse,
  Device,
  DeviceRequest,
  HealthResponse,
  MessageItem,
  ProfileDeleteResponse,
  ProfileResponse,
  RecommendationsResponse,
  Settings,
  StatisticsResponse,
  StoredObject,
  SyncResponse,
  UploadBucket,
  UploadDeleted,
  UploadGrant,
  UploadsPage,
  Usage,
  UsageResponse,
  UserStatistics,
} from "../supabase/functions/_shared/contracts.ts";

/** `activities`' query; `limit` defaults to 20. */
export type ActivitiesParams = Partial<ActivitiesQuery>;

type InvokeOptions = NonNullable<Parameters<SupabaseClient["functions"]["invoke"]>[1]>;

export type HistoryType = HistoryQuery["type"];
/** `history`'s query; `type` defaults to `analyses`, `limit` to 20. */
export type HistoryParams<T extends HistoryType> = Partial<Omit<HistoryQuery, "type">> & {
  type?: T;
};
export type HistoryPage<T extends HistoryType> = Extract<HistoryResponse, { type: T }>;

export interface SyncParams {
  /** The `cursor` of the last sync applied; leave out on a fresh install. */
  since?: string;
  /** The `etag` of the last answer to a sync with this same `since`. */
  etag?: string | null;
}

/**
 * A sync's outcome. `notModified`: nothing changed since the answer whose `etag` was sent, so
 * keep what you have. Otherwise the new state and the ETag to send next time with its cursor.
 */
export type SyncResult =
  | { notModified: true; etag: string | null }
  | { notModified: false; etag: string | null; data: SyncResponse };

export interface UploadPhotoOptions {
  /** A lowercase word naming what the photo is for; it becomes a folder of its path. */
  purpose: string;
  /** Defaults to `user-uploads`. */
  bucket?: UploadBucket;
  signal?: AbortSignal;
}

/** What `analyze` answers: the analysis, or in the background the id to `waitForAnalysis`. */
export type AnalyzeOutcome = AnalyzeResponse | AnalyzeAccepted;

export interface WaitOptions {
  /** Stops waiting (the promise rejects with `aborted`); `AbortSignal.timeout(ms)` for a limit. */
  signal?: AbortSignal;
  /** The first pause between syncs; it doubles after each unchanged answer. Default 2 s. */
  intervalMs?: number;
  /** The longest pause. Default 30 s. */
  maxIntervalMs?: number;
}

export type PaidPlan = Extract<BillingRequest, { action: "checkout" }>["plan"];

export interface ChatStreamOptions {
  /** Called with each piece of the reply as it arrives, in order. */
  onDelta?: (text: string) => void;
  /** Aborting stops the stream; the call then fails with code `aborted`. */
  signal?: AbortSignal;
}

/** An HTTP answer: the response and its body (parsed JSON, text, or for a stream the Response). */
interface Answer {
  response: Response;
  data: unknown;
}

function valid<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw invalidArgument(parsed.error);
  return parsed.data;
}

function conforming<T>(name: string, schema: z.ZodType<T>, response: Response, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue.path.length > 0 ? issue.path.join(".") : "body";
  throw unexpectedAnswer(
    name,
    response,
    `answered outside its contract (${where}: ${issue.message})`,
  );
}

function decoded<T>(name: string, schema: z.ZodType<T>, { response, data }: Answer): T {
  if (!response.ok) throw fromAnswer(name, response, data);
  return conforming(name, schema, response, data);
}

const AnalyzeOutcome = AnalyzeResponse.or(AnalyzeAccepted);

/** Resolves after `ms`, or rejects with `aborted` as soon as `signal` aborts. */
function pauseFor(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", stop);
      resolve();
    }, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(noAnswer("sync", signal?.reason, signal));
    };
    signal?.addEventListener("abort", stop, { once: true });
  });
}

/** `name?key=value&...`, built by hand so it does not depend on the runtime's URLSearchParams. */
function withQuery(name: string, params: Record<string, string | number | undefined>): string {
  const pairs = Object.entries(params)
    .filter((pair): pair is [string, string | number] => pair[1] !== undefined)
    .map(([key, value]) => `${encodeURIComponent(key)}=${encodeURIComponent(value)}`);
  return pairs.length > 0 ? `${name}?${pairs.join("&")}` : name;
}

/** The text parsed when it is JSON; otherwise the text itself, which no contract accepts. */
function jsonOrText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function bodyOf(response: Response): Promise<unknown> {
  const text = await response.text();
  return text === "" ? null : jsonOrText(text);
}

/**
 * Creates the client over a supabase-js client; only its `functions` is used, so a client
 * typed with the app's `Database` fits as well.
 */
export function createApiClient(supabase: Pick<SupabaseClient, "functions" | "storage">) {
  /**
   * One call, whatever its status. functions-js reports every non-2xx answer (a 304 included)
   * as a FunctionsHttpError whose `context` is the Response, with the body unread; only a
   * call that got no answer at all becomes an ApiClientError here.
   */
  async function exchange(name: string, options: InvokeOptions): Promise<Answer> {
    const { data, error, response } = await supabase.functions.invoke(name, options);
    const label = name.split("?")[0];
    if (!error && response) return { response, data };
    if (error instanceof FunctionsHttpError || error instanceof FunctionsRelayError) {
      const failed = error.context as Response;
      try {
        return { response: failed, data: await bodyOf(failed) };
      } catch (cause) {
        throw noAnswer(label, cause, options.signal);
      }
    }
    if (error instanceof SyntaxError) {
      // functions-js parses a JSON answer itself; this one was not JSON.
      throw new ApiClientError("invalid_response", `${label} answered malformed JSON`, {
        status: 0,
        requestId: null,
      });
    }
    throw noAnswer(
      label,
      error instanceof FunctionsFetchError ? error.context : error,
      options.signal,
    );
  }

  const call = async <T>(name: string, schema: z.ZodType<T>, options: InvokeOptions) =>
    decoded(name, schema, await exchange(name, options));

  /**
   * What changed since `since`. With the `etag` of the last answer to the same `since`, an
   * unchanged state answers `{ notModified: true }` without a body.
   */
  async function sync({ since, etag }: SyncParams = {}): Promise<SyncResult> {
    const query = valid(SyncQuery, { since });
    const answer = await exchange(withQuery("sync", { ...query }), {
      method: "GET",
      headers: etag ? { "If-None-Match": etag } : {},
    });
    const answeredEtag = answer.response.headers.get("etag");
    if (answer.response.status === 304) {
      return { notModified: true, etag: answeredEtag ?? etag ?? null };
    }
    const data = decoded("sync", SyncResponse, answer);
    return { notModified: false, etag: answeredEtag, data };
  }

  /** The SSE events of a streamed chat, a lost connection becoming `network_error` or `aborted`. */
  async function* chatEvents(response: Response, signal?: AbortSignal) {
    try {
      yield* serverSentEvents(response);
    } catch (cause) {
      throw noAnswer("chat", cause, signal);
    }
  }

  const eventData = <T>(schema: z.ZodType<T>, response: Response, data: string): T =>
    conforming("chat", schema, response, jsonOrText(data));

  // Every method is async, so a refused argument arrives as a rejected promise like any other
  // failure, never as a synchronous throw.
  return {
    /**
     * The backend's health report. A degraded backend answers 503 with the report itself,
     * which is returned like a healthy one (`status: "degraded"`), not thrown.
     */
    async health(): Promise<HealthResponse> {
      const answer = await exchange("health", { method: "GET" });
      const report = HealthResponse.safeParse(answer.data);
      if (answer.response.status === 503 && report.success) return report.data;
      return decoded("health", HealthResponse, answer);
    },

    profile: {
      async get(): Promise<ProfileResponse> {
        return await call("profile", ProfileResponse, { method: "GET" });
      },

      /** Merges `settings` into the profile's (keys left out keep their value). */
      async update(settings: Settings): Promise<ProfileResponse> {
        const body = valid(ProfileUpdateRequest, { settings });
        return await call("profile", ProfileResponse, { method: "PATCH", body });
      },

      /**
       * Deletes the account and everything in it; the session's token is refused from then on,
       * so sign out afterwards.
       */
      async delete(): Promise<ProfileDeleteResponse> {
        return await call("profile", ProfileDeleteResponse, { method: "DELETE" });
      },
    },

    async usage(): Promise<UsageResponse> {
      return await call("usage", UsageResponse, { method: "GET" });
    },

    /** One page, newest first; pass `next_cursor` back as `cursor` while `has_more`. */
    async history<T extends HistoryType = "analyses">(
      params: HistoryParams<T> = {},
    ): Promise<HistoryPage<T>> {
      const query = valid(HistoryQuery, params);
      const answer = await exchange(withQuery("history", { ...query }), { method: "GET" });
      const page = decoded("history", HistoryResponse, answer);
      if (page.type !== query.type) {
        throw unexpectedAnswer("history", answer.response, `answered ${page.type}`);
      }
      return page as HistoryPage<T>;
    },

    sync,
    /** The user's activity log, one page newest first; pass `next_cursor` back as `cursor`. */
    async activities(params: ActivitiesParams = {}): Promise<ActivitiesResponse> {
      const query = valid(ActivitiesQuery, params);
      return await call(withQuery("activities", { ...query }), ActivitiesResponse, {
        method: "GET",
      });
    },

    /**
     * The user's statistics: counts as of `refreshed_at` (hourly), usage and quota live;
     * `statistics` is null for an account newer than the last refresh.
     */
    async statistics(): Promise<StatisticsResponse> {
      return await call("statistics", StatisticsResponse, { method: "GET" });
    },

    /**
     * The answer of `analyze`: the analysis (200), or for a background analysis (`"mode":
     * "background"`, the default for photos) its id, to follow with `waitForAnalysis`.
     */
    async analyze(request: AnalyzeRequest): Promise<AnalyzeOutcome> {
      return await call("analyze", AnalyzeOutcome, { body: valid(AnalyzeRequest, request) });
    },

    /**
     * Waits for the background analysis `id` to be `done` or `failed`, and answers it. It follows
     * `sync` with its ETag, so each unchanged look is a 304 without a body, pausing longer after
     * each (from `intervalMs`, doubling, up to `maxIntervalMs`): not a tight poll. Stop it with
     * `signal`.
     */
    async waitForAnalysis(id: string, options: WaitOptions = {}): Promise<AnalysisItem> {
      const { signal, intervalMs = 2_000, maxIntervalMs = 30_000 } = options;
      let since: string | undefined;
      let etag: string | null = null;
      let pause = intervalMs;
      for (;;) {
        if (signal?.aborted) throw noAnswer("sync", signal.reason, signal);
        const result = await sync({ since, etag });
        if (result.notModified) {
          pause = Math.min(pause * 2, maxIntervalMs);
        } else {
          const finished = result.data.analyses.find((a) => a.id === id && a.status !== "pending");
          if (finished) return finished;
          // The ETag belongs to the `since` it answered; a new cursor starts a new one.
          etag = result.data.cursor === since ? result.etag : null;
          since = result.data.cursor;
          pause = intervalMs;
        }
        await pauseFor(pause, signal);
      }
    },

    async chat(request: ChatRequest): Promise<ChatResponse> {
      return await call("chat", ChatResponse, { body: valid(ChatRequest, request) });
    },

    /**
     * The chat reply as it is written: `onDelta` gets each piece in order, and the returned
     * promise settles once with the stored ChatResponse (whose `reply.content` is all the pieces
     * together) or rejects with an ApiClientError, also when the reply breaks off mid-way.
     */
    async chatStream(
      request: ChatRequest,
      { onDelta, signal }: ChatStreamOptions = {},
    ): Promise<ChatResponse> {
      const body = valid(ChatRequest, request);
      const { response, data } = await exchange("chat", {
        body,
        headers: { Accept: "text/event-stream" },
        signal,
      });
      if (!response.ok) throw fromAnswer("chat", response, data);
      if (!/^text\/event-stream/i.test(response.headers.get("content-type") ?? "")) {
        throw unexpectedAnswer("chat", response, "answered without an event stream");
      }
      for await (const event of chatEvents(response, signal)) {
        if (event.event === "delta") onDelta?.(eventData(ChatDelta, response, event.data).text);
        else if (event.event === "done") return eventData(ChatResponse, response, event.data);
        else if (event.event === "error") {
          const envelope = eventData(ErrorEnvelope, response, event.data);
          throw fromEnvelope(envelope, response.status, response.headers);
        }
      }
      throw unexpectedAnswer("chat", response, "ended its stream before the reply was done");
    },

    /**
     * Uploads a photo (a Blob: a web File, or `await (await fetch(uri)).blob()` in Expo) straight
     * to Storage: asks `uploads` for a signed URL under the storage quota, then sends the bytes
     * there. Answers the grant, whose `path` is what `analyzePhoto` and `uploads.delete` take.
     * Storage's own refusals (over the bucket's size, a type it does not take) become
     * ApiClientErrors like any other.
     */
    async uploadPhoto(file: Blob, options: UploadPhotoOptions): Promise<UploadGrant> {
      const bucket = options.bucket ?? "user-uploads";
      const body = valid(UploadRequest, {
        bucket,
        content_type: file.type,
        size_bytes: file.size,
        purpose: options.purpose,
      });
      const grant = await call("uploads", UploadGrant, { body, signal: options.signal });
      let failure: unknown;
      try {
        const { error } = await supabase.storage.from(bucket).uploadToSignedUrl(
          grant.path,
          grant.token,
          file,
          { contentType: file.type },
        );
        failure = error;
      } catch (cause) {
        failure = cause;
      }
      if (failure) throw fromStorage("upload", failure);
      return grant;
    },

    /** An analysis of a photo uploaded with `uploadPhoto` (by its `path`). */
    async analyzePhoto(
      path: string,
      analysisType: string,
      bucket: UploadBucket = "user-uploads",
    ): Promise<AnalyzeOutcome> {
      const body = valid(AnalyzeRequest, {
        analysis_type: analysisType,
        input: { kind: "storage", bucket, path },
      });
      return await call("analyze", AnalyzeOutcome, { body });
    },

    devices: {
      /**
       * Registers this install's Expo push token (`getExpoPushTokenAsync`) for notifications;
       * call it at every start, it is idempotent. Not an Expo push token: `validation_failed`.
       */
      async register(request: DeviceRequest): Promise<Device> {
        return await call("devices", Device, { body: valid(DeviceRequest, request) });
      },

      /** Stops notifications to this install (on sign-out). */
      async unregister(token: string): Promise<DeviceDeleted> {
        const query = valid(DevicesQuery, { token });
        return await call(withQuery("devices", { token: query.token }), DeviceDeleted, {
          method: "DELETE",
        });
      },
    },

    /** The latest weekly recommendations, or `recommendation: null` before the first. */
    async recommendations(): Promise<RecommendationsResponse> {
      return await call("recommendations", RecommendationsResponse, { method: "GET" });
    },

    uploads: {
      /** The caller's uploaded objects, newest first; pass `next_cursor` back as `cursor`. */
      async list(params: Partial<Omit<UploadsQuery, "path">> = {}): Promise<UploadsPage> {
        const query = valid(UploadsQuery, params);
        return await call(withQuery("uploads", { ...query }), UploadsPage, { method: "GET" });
      },

      /** Deletes one of the caller's objects; its bytes go back to the storage quota. */
      async delete(path: string, bucket: UploadBucket = "user-uploads"): Promise<UploadDeleted> {
        const query = valid(UploadsQuery, { path, bucket });
        return await call(
          withQuery("uploads", { path: query.path, bucket: query.bucket }),
          UploadDeleted,
          {
            method: "DELETE",
          },
        );
      },
    },

    billing: {
      /** A Stripe Checkout URL for `plan`; open it in the browser. */
      async checkout(plan: PaidPlan): Promise<BillingResponse> {
        const body = valid(BillingRequest, { action: "checkout", plan });
        return await call("billing", BillingResponse, { body });
      },

      /** A Stripe Customer Portal URL (change plan or card, cancel); open it in the browser. */
      async portal(): Promise<BillingResponse> {
        const body = valid(BillingRequest, { action: "portal" });
        return await call("billing", BillingResponse, { body });
      },
    },
  };
}

export type ApiClient = ReturnType<typeof createApiClient>;
