import type OpenAI from "openai";
import { z } from "zod";
import type { Config } from "./config.ts";
import { AnalysisResult, type AnalyzeInput } from "./contracts.ts";
import { ApiError } from "./errors.ts";
import { log } from "./log.ts";
import { withTimeout } from "./timeout.ts";

/**
 * The model, through the official `openai` SDK against whatever OpenAI-compatible server the
 * config names. The SDK is imported on first use, so functions (and requests: cache hits, refused
 * quotas) that never call the model never pay for loading it. Every way a call can fail (no key,
 * an error status after the SDK's bounded retries, a timeout, an answer that is not what was
 * asked for) becomes 503 `ai_unavailable`; what the provider said stays in a log line of error
 * classes and statuses, so neither its messages nor the key reach a client, and prompts and
 * answers are never logged.
 */

/** Part of every cache key: changing the prompts below must change it, or old answers return. */
export const PROMPT_VERSION = 1;

export interface ChatTurn {
  role: "user" | "assistant";
  content: string;
}

/** What every model call carries besides its messages. */
export interface ModelCall {
  requestId: string;
  /** The caller's plan's `max_output_tokens`, sent as `max_completion_tokens`, always. */
  maxOutputTokens: number;
}

/**
 * Model text as Postgres can store it: U+0000 and unpaired surrogates, which a model can be
 * talked into writing, become U+FFFD, so storing what the caller paid for cannot fail on them.
 */
export function storable(text: string): string {
  return text.toWellFormed().replaceAll("\0", "\uFFFD");
}

/** JSON.parse reviver applying `storable` to every string, object keys included. */
function storableJson(_key: string, value: unknown): unknown {
  if (typeof value === "string") return storable(value);
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [storable(key), item]));
  }
  return value;
}

/** The reply as it arrives; `cancel` stops it (and the provider's work) when the client leaves. */
export interface ReplyStream extends AsyncIterable<string> {
  cancel(): void;
}

const ANALYSIS_PROMPT = [
  "You analyse what the user sends for the analysis type they name.",
  "Answer with one JSON object and nothing else: a short summary; scores from 0 to 100 for the",
  "aspects that matter for that analysis type; findings, each with a title, a detail and a",
  "severity of low, medium or high; and concrete recommendations.",
].join(" ");

const CHAT_PROMPT = "You are the assistant of a mobile app. Answer helpfully and concisely.";

const ANALYSIS_SCHEMA = (() => {
  const { $schema: _, ...schema } = z.toJSONSchema(AnalysisResult);
  return schema;
})();

const unavailable = () =>
  new ApiError("ai_unavailable", "the AI service is unavailable; try again later");

/** Refuses at once, before anything is charged, when no provider is configured. */
export function requireAi(c: Config): void {
  if (!c.OPENAI_API_KEY) {
    throw new ApiError("ai_unavailable", "no AI provider is configured");
  }
}

type Sdk = typeof import("openai");
let sdk: Promise<{ module: Sdk; client: OpenAI }> | undefined;

function openai(c: Config): Promise<{ module: Sdk; client: OpenAI }> {
  requireAi(c);
  sdk ??= import("openai").then((module) => ({
    module,
    client: new module.default({
      apiKey: c.OPENAI_API_KEY,
      baseURL: c.OPENAI_BASE_URL ?? "https://api.openai.com/v1",
      timeout: c.OPENAI_TIMEOUT_MS,
      maxRetries: c.OPENAI_MAX_RETRIES,
      // Only the config decides where requests go and what they carry.
      organization: null,
      project: null,
      // The SDK's debug log prints request bodies, which hold the prompts.
      logLevel: "off",
    }),
  })).catch((error) => {
    sdk = undefined;
    throw error;
  });
  return sdk;
}

/** Why a call failed, in words that carry nothing the provider or the user wrote. */
function reasonOf(module: Sdk, error: unknown): { reason: string; status?: number } {
  if (error instanceof module.APIConnectionTimeoutError) return { reason: "timeout" };
  if (error instanceof module.APIUserAbortError) return { reason: "aborted" };
  if (error instanceof module.APIConnectionError) return { reason: "connection" };
  if (
    error instanceof module.AuthenticationError || error instanceof module.PermissionDeniedError
  ) {
    return { reason: "credentials refused", status: error.status };
  }
  if (error instanceof module.RateLimitError) return { reason: "rate limited", status: 429 };
  if (error instanceof module.APIError) return { reason: "error status", status: error.status };
  return { reason: error instanceof Error ? error.name : "unknown" };
}

function failed(requestId: string, call: string, detail: { reason: string; status?: number }) {
  const fields = { request_id: requestId, call, ...detail };
  // A refused key is an operator's problem, not a passing one.
  if (detail.reason === "credentials refused") log.error("model call failed", fields);
  else log.warn("model call failed", fields);
  return unavailable();
}

/** What the model is sent: a Storage object reaches it as an image URL. */
export type ModelInput = Exclude<AnalyzeInput, { kind: "storage" }>;

function analysisMessages(analysisType: string, input: ModelInput) {
  const subject = input.kind === "text" ? { type: "text" as const, text: input.text } : {
    type: "image_url" as const,
    image_url: {
      url: input.kind === "image_url" ? input.url : `data:${input.media_type};base64,${input.data}`,
    },
  };
  return [
    { role: "system" as const, content: ANALYSIS_PROMPT },
    {
      role: "user" as const,
      content: [{ type: "text" as const, text: `Analysis type: ${analysisType}` }, subject],
    },
  ];
}

function chatMessages(turns: ChatTurn[]) {
  return [{ role: "system" as const, content: CHAT_PROMPT }, ...turns];
}

function parseAnalysis(content: string | null | undefined): AnalysisResult | null {
  if (!content) return null;
  try {
    const parsed = AnalysisResult.safeParse(JSON.parse(content, storableJson));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/** A structured analysis, validated against `AnalysisResult`; anything else is a failure. */
export async function analyzeWithModel(
  c: Config,
  request: { analysisType: string; input: ModelInput },
  { requestId, maxOutputTokens }: ModelCall,
): Promise<AnalysisResult> {
  const { module, client } = await openai(c);
  let content: string | null | undefined;
  try {
    const completion = await client.chat.completions.create({
      model: c.OPENAI_MODEL,
      max_completion_tokens: maxOutputTokens,
      messages: analysisMessages(request.analysisType, request.input),
      response_format: {
        type: "json_schema",
        json_schema: { name: "analysis_result", schema: ANALYSIS_SCHEMA },
      },
    });
    content = completion.choices[0]?.message?.content;
  } catch (error) {
    throw failed(requestId, "analyze", reasonOf(module, error));
  }
  const result = parseAnalysis(content);
  if (!result) throw failed(requestId, "analyze", { reason: "invalid output" });
  return result;
}

/** The assistant's next message after `turns`. */
export async function chatReply(
  c: Config,
  turns: ChatTurn[],
  { requestId, maxOutputTokens }: ModelCall,
): Promise<string> {
  const { module, client } = await openai(c);
  let content: string | null | undefined;
  try {
    const completion = await client.chat.completions.create({
      model: c.OPENAI_MODEL,
      max_completion_tokens: maxOutputTokens,
      messages: chatMessages(turns),
    });
    content = completion.choices[0]?.message?.content;
  } catch (error) {
    throw failed(requestId, "chat", reasonOf(module, error));
  }
  if (!content) throw failed(requestId, "chat", { reason: "empty output" });
  return content;
}

/**
 * The assistant's next message as a stream of text pieces. Resolves once the provider has
 * accepted the request (so a provider that is down still fails before any event is sent, with
 * the SDK's retries); after that, a provider that stays silent for `OPENAI_TIMEOUT_MS` or breaks
 * off fails the iteration.
 */
export async function streamChatReply(
  c: Config,
  turns: ChatTurn[],
  { requestId, maxOutputTokens }: ModelCall,
): Promise<ReplyStream> {
  const { module, client } = await openai(c);
  const abort = new AbortController();
  let chunks: AsyncIterator<OpenAI.Chat.ChatCompletionChunk>;
  try {
    const stream = await client.chat.completions.create(
      {
        model: c.OPENAI_MODEL,
        max_completion_tokens: maxOutputTokens,
        messages: chatMessages(turns),
        stream: true,
      },
      { signal: abort.signal },
    );
    chunks = stream[Symbol.asyncIterator]();
  } catch (error) {
    throw failed(requestId, "chat stream", reasonOf(module, error));
  }
  let cancelled = false;

  async function* pieces(): AsyncGenerator<string> {
    let any = false;
    try {
      for (;;) {
        let next: IteratorResult<OpenAI.Chat.ChatCompletionChunk>;
        let answered = false;
        try {
          const read = chunks.next().finally(() => answered = true);
          next = await withTimeout(read, c.OPENAI_TIMEOUT_MS, "model stream");
        } catch (error) {
          if (cancelled) return;
          throw failed(
            requestId,
            "chat stream",
            answered ? reasonOf(module, error) : { reason: "stalled" },
          );
        }
        if (next.done) break;
        const text = next.value.choices[0]?.delta?.content;
        if (text) {
          any = true;
          yield text;
        }
      }
    } finally {
      abort.abort();
    }
    if (!any) throw failed(requestId, "chat stream", { reason: "empty output" });
  }

  return {
    [Symbol.asyncIterator]: pieces,
    cancel() {
      cancelled = true;
      abort.abort();
    },
  };
}
