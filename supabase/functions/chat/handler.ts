import type { z } from "zod";
import {
  chatReply,
  type ChatTurn,
  PROMPT_VERSION,
  type ReplyStream,
  requireAi,
  storable,
  streamChatReply,
} from "../_shared/ai.ts";
import { aiCacheKey, readAiCache, writeAiCache } from "../_shared/ai-cache.ts";
import {
  ChatDelta,
  ChatRequest,
  type ChatResponse,
  type ErrorEnvelope,
  MessageItem,
  type Usage,
} from "../_shared/contracts.ts";
import type { Sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { errorEnvelope, json } from "../_shared/http.ts";
import { defineFunction, toApiError } from "../_shared/pipeline.ts";
import { Charge, currentUsage } from "../_shared/usage.ts";

/**
 * `POST chat`: the assistant's reply to a message, stored with the message in `chat_messages`.
 * With `Accept: text/event-stream` the reply streams as server-sent events (see `ChatDelta` in
 * contracts.ts): `delta` events, then `done` with the ChatResponse, or `error` with an envelope.
 *
 * The model sees the conversation's newest `CONTEXT_MESSAGES` messages that fit the plan's
 * `chat_history_chars` beside the new one, and may answer with at most the plan's
 * `max_output_tokens`. A `conversation_id` the caller has no messages in, whether it is unknown
 * or another user's, is 404 `not_found`, so nobody can read or extend someone else's
 * conversation or learn that it exists.
 *
 * Metering is the analyze function's: no provider, 503 before anything; the same user's
 * identical context is answered from the AI response cache with `cached: true` at the plan's
 * `cache_hit_cost` (never from another user's entry); otherwise one unit is taken (402 when the
 * quota is spent) before the model is called. The `Charge` rule decides refunds: a failure
 * before any of the reply reached the client gives the unit back; once a piece of it has been
 * sent (a streamed delta, or the 2xx body), the unit stays spent, whether the stream then breaks
 * off (an `error` event follows), storing fails (the reply still goes out) or the client hangs
 * up (the provider is stopped and nothing is stored).
 */

const CONTEXT_MESSAGES = 20;

/** The caller's latest messages of the conversation, oldest first. */
function history(db: Sql, userId: string, conversationId: string): Promise<ChatTurn[]> {
  return db<ChatTurn[]>`
    select role, content
      from (select role, content, created_at, id
              from public.chat_messages
             where user_id = ${userId} and conversation_id = ${conversationId}
             order by created_at desc, id desc
             limit ${CONTEXT_MESSAGES}) as latest
     order by created_at, id`;
}

/** The columns of `chat_messages` a `MessageItem` shows. */
const MESSAGE_COLUMNS = Object.keys(MessageItem.shape).join(", ");

/**
 * The newest of the earlier turns whose characters, with the new message's, fit `budget`,
 * oldest first: a long conversation costs the plan's bound, not its length.
 */
export function withinBudget(earlier: ChatTurn[], message: string, budget: number): ChatTurn[] {
  let left = budget - message.length;
  let start = earlier.length;
  while (start > 0 && earlier[start - 1].content.length <= left) {
    start--;
    left -= earlier[start].content.length;
  }
  return earlier.slice(start);
}

interface Exchange {
  conversationId: string;
  message: string;
  reply: string;
  model: string;
  cached: boolean;
}

/** The reply as answered; also what is answered when it could not be stored. */
function replyItem(exchange: Exchange): MessageItem {
  return {
    id: crypto.randomUUID(),
    created_at: new Date().toISOString(),
    conversation_id: exchange.conversationId,
    role: "assistant",
    content: exchange.reply,
    model: exchange.model,
  };
}

/** Both messages in one statement; the reply a microsecond after the message, so they sort. */
async function store(db: Sql, userId: string, exchange: Exchange): Promise<MessageItem> {
  const [row] = await db`
    with inserted as (
      insert into public.chat_messages (user_id, conversation_id, role, content, model, created_at)
      values (${userId}, ${exchange.conversationId}, 'user', ${exchange.message}, null, now()),
             (${userId}, ${exchange.conversationId}, 'assistant', ${exchange.reply},
              ${exchange.model}, now() + interval '1 microsecond')
      returning ${db.unsafe(MESSAGE_COLUMNS)}
    ), activity as (
      insert into public.activities (user_id, kind, detail)
      values (${userId}, 'chat',
              jsonb_build_object('conversation_id', ${exchange.conversationId}::uuid,
                                 'cached', ${exchange.cached}))
    )
    select * from inserted where role = 'assistant'`;
  return MessageItem.parse({ ...row, created_at: row.created_at.toISOString() });
}

type Event =
  | ["delta", z.infer<typeof ChatDelta>]
  | ["done", ChatResponse]
  | ["error", ErrorEnvelope];

/** Server-sent events from `events`; `onHangUp` runs when the client goes away first. */
function eventStream(events: AsyncGenerator<Event>, onHangUp = () => {}): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await events.next();
      if (next.done) return controller.close();
      const [event, data] = next.value;
      controller.enqueue(encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`));
    },
    async cancel() {
      onHangUp();
      await events.return(undefined);
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream; charset=utf-8" },
  });
}

const wantsEvents = (req: Request) =>
  (req.headers.get("accept") ?? "").toLowerCase().includes("text/event-stream");

export const handler = defineFunction(
  { name: "chat", methods: ["POST"], auth: "user", rateLimit: "ai", body: ChatRequest },
  async (
    { req, caller, profile: { plan }, body, config, requestId, sql: db, redis, signals, wrote },
  ) => {
    requireAi(config);
    const model = config.OPENAI_MODEL;
    const ttl = config.AI_CACHE_TTL_SECONDS;
    const call = { requestId, maxOutputTokens: plan.max_output_tokens };

    const conversationId = body.conversation_id ?? crypto.randomUUID();
    const earlier = body.conversation_id ? await history(db, caller.id, conversationId) : [];
    if (body.conversation_id && earlier.length === 0) {
      throw new ApiError("not_found", "no such conversation");
    }
    const turns: ChatTurn[] = [
      ...withinBudget(earlier, body.message, plan.chat_history_chars),
      { role: "user", content: body.message },
    ];
    const key = await aiCacheKey({
      prompt: PROMPT_VERSION,
      function: "chat",
      model,
      user: caller.id,
      messages: turns.map(({ role, content }) => ({ role, content: content.trim() })),
    });

    const cached = await readAiCache<string>(redis, db, key, ttl);
    signals.ai_cache_hit = cached !== null;
    const exchange = (reply: string): Exchange => ({
      conversationId,
      message: body.message,
      reply: storable(reply),
      model,
      cached: cached !== null,
    });
    const response = (reply: MessageItem, usage: Usage): ChatResponse => ({
      conversation_id: conversationId,
      reply,
      cached: cached !== null,
      usage,
    });
    const replyEvents = (reply: string, done: () => Promise<ChatResponse>) =>
      eventStream((async function* (): AsyncGenerator<Event> {
        yield ["delta", { text: reply }];
        yield ["done", await done()];
      })());

    if (cached !== null && plan.cache_hit_cost === 0) {
      // A free answer is not stored: nothing a caller can do for free grows a table.
      const answer = response(replyItem(exchange(cached)), await currentUsage(db, caller.id));
      return wantsEvents(req) ? replyEvents(cached, () => Promise.resolve(answer)) : json(answer);
    }

    const charge = await Charge.take(db, caller.id, requestId, cached ? plan.cache_hit_cost : 1);
    /** Delivers a whole reply: stored, cached when fresh, and answered even if storing fails. */
    const deliver = async (reply: string): Promise<ChatResponse> => {
      const made = exchange(reply);
      const [message] = await Promise.all([
        charge.deliver(() => store(db, caller.id, made), () => replyItem(made)),
        cached !== null ? undefined : writeAiCache(redis, db, {
          key,
          answer: made.reply,
          model,
          ttlSeconds: ttl,
          owner: caller.id,
        }),
      ]);
      wrote();
      return response(message, charge.usage);
    };

    if (cached !== null) {
      charge.delivered();
      return wantsEvents(req)
        ? replyEvents(cached, () => deliver(cached))
        : json(await deliver(cached));
    }
    if (!wantsEvents(req)) {
      let reply: string;
      try {
        reply = await chatReply(config, turns, call);
      } catch (error) {
        throw await charge.failed(error);
      }
      return json(await deliver(reply));
    }

    let stream: ReplyStream;
    try {
      stream = await streamChatReply(config, turns, call);
    } catch (error) {
      throw await charge.failed(error);
    }
    let hungUp = false;
    async function* events(): AsyncGenerator<Event> {
      let reply = "";
      try {
        for await (const text of stream) {
          reply += text;
          charge.delivered();
          yield ["delta", { text }];
        }
        if (hungUp) return;
        yield ["done", await deliver(reply)];
      } catch (error) {
        if (hungUp) return;
        const answered = await charge.failed(error);
        yield [
          "error",
          errorEnvelope(toApiError(answered, "chat", requestId, caller.id), requestId),
        ];
      }
    }
    return eventStream(events(), () => {
      hungUp = true;
      stream.cancel();
      void charge.failed(new Error("the client hung up"));
    });
  },
);
