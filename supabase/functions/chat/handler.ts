import type { Redis } from "@upstash/redis";
import type { z } from "zod";
import {
  chatReply,
  type ChatTurn,
  PROMPT_VERSION,
  type ReplyStream,
  requireAi,
  streamChatReply,
} from "../_shared/ai.ts";
import { aiCacheKey, readAiCache, writeAiCache } from "../_shared/ai-cache.ts";
import {
  ChatDelta,
  ChatRequest,
  type ChatResponse,
  type ErrorEnvelope,
  type MessageItem,
} from "../_shared/contracts.ts";
import { type Sql, sql } from "../_shared/db.ts";
import { ApiError } from "../_shared/errors.ts";
import { errorEnvelope, json } from "../_shared/http.ts";
import { defineFunction, toApiError } from "../_shared/pipeline.ts";
import { redis } from "../_shared/redis.ts";
import { currentUsage, refundAfterFailure, takeUsage, type Usage } from "../_shared/usage.ts";

/**
 * `POST chat`: the assistant's reply to a message, stored with the message in `chat_messages`.
 * With `Accept: text/event-stream` the reply streams as server-sent events (see `ChatDelta` in
 * contracts.ts): `delta` events, then `done` with the ChatResponse, or `error` with an envelope.
 *
 * The model sees the conversation's last `CONTEXT_MESSAGES` messages. A `conversation_id` the
 * caller has no messages in, whether it is unknown or another user's, is 404 `not_found`, so
 * nobody can read or extend someone else's conversation or learn that it exists.
 *
 * Metering is the analyze function's: no provider, 503 before anything; an identical context is
 * answered from the AI response cache with `cached: true` and NOT charged; otherwise one unit is
 * taken (402 when the quota is spent) before the model is called and given back if it fails or
 * times out. Streaming changes none of it: the messages are stored and the unit kept only once
 * the whole reply is in, and a reply that breaks off mid-stream is refunded and ends with an
 * `error` event. A client that hangs up mid-stream has been served part of the reply: the
 * provider is stopped, nothing is stored, and the unit stays spent.
 */

export interface ChatDeps {
  sql: () => Sql;
  redis: () => Redis;
}

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

interface MessageRow extends Omit<MessageItem, "created_at"> {
  created_at: Date;
}

/** Both messages in one statement; the reply a microsecond after the message, so they sort. */
async function store(
  db: Sql,
  userId: string,
  exchange: {
    conversationId: string;
    message: string;
    reply: string;
    model: string;
    cached: boolean;
  },
): Promise<MessageItem> {
  const [row] = await db<MessageRow[]>`
    with inserted as (
      insert into public.chat_messages (user_id, conversation_id, role, content, model, created_at)
      values (${userId}, ${exchange.conversationId}, 'user', ${exchange.message}, null, now()),
             (${userId}, ${exchange.conversationId}, 'assistant', ${exchange.reply},
              ${exchange.model}, now() + interval '1 microsecond')
      returning id, created_at, conversation_id, role, content, model
    ), activity as (
      insert into public.activities (user_id, kind, detail)
      values (${userId}, 'chat',
              jsonb_build_object('conversation_id', ${exchange.conversationId}::uuid,
                                 'cached', ${exchange.cached}))
    )
    select * from inserted where role = 'assistant'`;
  return { ...row, created_at: row.created_at.toISOString() };
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
    headers: { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store" },
  });
}

const wantsEvents = (req: Request) =>
  (req.headers.get("accept") ?? "").toLowerCase().includes("text/event-stream");

export function createChatHandler(deps: ChatDeps = { sql, redis }) {
  return defineFunction(
    { name: "chat", methods: ["POST"], auth: "user", rateLimit: "ai", body: ChatRequest },
    async ({ req, caller, body, config, requestId }) => {
      requireAi(config);
      const db = deps.sql();
      const model = config.OPENAI_MODEL;
      const ttl = config.AI_CACHE_TTL_SECONDS;

      const conversationId = body.conversation_id ?? crypto.randomUUID();
      const earlier = body.conversation_id ? await history(db, caller.id, conversationId) : [];
      if (body.conversation_id && earlier.length === 0) {
        throw new ApiError("not_found", "no such conversation");
      }
      const turns: ChatTurn[] = [...earlier, { role: "user", content: body.message }];
      const key = await aiCacheKey({
        prompt: PROMPT_VERSION,
        function: "chat",
        model,
        messages: turns.map(({ role, content }) => ({ role, content: content.trim() })),
      });

      const answer = async (reply: string, cached: boolean, usage: Usage) => {
        const stored = store(db, caller.id, {
          conversationId,
          message: body.message,
          reply,
          model,
          cached,
        });
        const written = cached ? undefined : writeAiCache(deps.redis(), db, key, reply, model, ttl);
        const [message] = await Promise.all([stored, written]);
        return {
          conversation_id: conversationId,
          reply: message,
          cached,
          usage,
        } satisfies ChatResponse;
      };

      const cached = await readAiCache<string>(deps.redis(), db, key, ttl);
      if (cached !== null) {
        const response = await answer(cached, true, await currentUsage(db, caller.id));
        if (!wantsEvents(req)) return json(response);
        return eventStream((async function* (): AsyncGenerator<Event> {
          yield ["delta", { text: cached }];
          yield ["done", response];
        })());
      }

      const usage = await takeUsage(db, caller.id);
      if (!wantsEvents(req)) {
        try {
          return json(await answer(await chatReply(config, turns, requestId), false, usage));
        } catch (error) {
          throw await refundAfterFailure(db, caller.id, usage, error, requestId);
        }
      }

      let stream: ReplyStream;
      try {
        stream = await streamChatReply(config, turns, requestId);
      } catch (error) {
        throw await refundAfterFailure(db, caller.id, usage, error, requestId);
      }
      let hungUp = false;
      async function* events(): AsyncGenerator<Event> {
        let reply = "";
        try {
          for await (const text of stream) {
            reply += text;
            yield ["delta", { text }];
          }
          if (hungUp) return;
          yield ["done", await answer(reply, false, usage)];
        } catch (error) {
          if (hungUp) return;
          const refunded = await refundAfterFailure(db, caller.id, usage, error, requestId);
          yield ["error", errorEnvelope(toApiError(refunded, "chat", requestId), requestId)];
        }
      }
      return eventStream(events(), () => {
        hungUp = true;
        stream.cancel();
      });
    },
  );
}
