import assert from "node:assert/strict";
import type { Gateway } from "../local/gateway.ts";
import { type Behaviour, type OpenAiServer, startOpenAiServer } from "./openai_server.ts";
import { appClient, functionsGateway, invoke, type Invoked } from "./support.ts";

/**
 * What the AI functions' tests share: a local OpenAI-compatible server, a gateway whose functions
 * call it (collecting their log lines), and the calls the app makes.
 */

export interface ModelStack {
  server: OpenAiServer;
  /** The key the functions send; no answer or log line may carry it. */
  apiKey: string;
  gateway: Gateway;
  logs: string[];
  /** Runs `work` with the model server answering as `behaviour`, then puts it back. */
  whileModel(behaviour: Behaviour, work: () => Promise<void>): Promise<void>;
  /** `analyze` on this stack's gateway, or on the one at `url`. */
  analyze(token: string | undefined, body: unknown, url?: string): Promise<Invoked>;
  chat(token: string | undefined, body: unknown, url?: string): Promise<Invoked>;
  /** `chat` with `Accept: text/event-stream`: the HTTP status and every event, in order. */
  chatStream(token: string, body: unknown): Promise<Invoked & { events: SentEvent[] }>;
}

export interface SentEvent {
  event: string;
  // deno-lint-ignore no-explicit-any
  data: any;
}

/** A fresh message or text, so that no run is answered from what an earlier one cached. */
export const fresh = (text = "Hello there") => `${text} ${crypto.randomUUID()}`;

export async function modelStack(functionEnv: Record<string, string> = {}): Promise<ModelStack> {
  const key = `sk-test-${crypto.randomUUID()}`;
  const server = startOpenAiServer(key);
  const logs: string[] = [];
  const gateway = await functionsGateway({
    OPENAI_BASE_URL: `${server.url}/v1`,
    OPENAI_API_KEY: key,
    OPENAI_TIMEOUT_MS: "1000",
    OPENAI_MAX_RETRIES: "1",
    ...functionEnv,
  }, (line) => logs.push(line));
  const call = (name: string) => (token: string | undefined, body: unknown, url = gateway.url) =>
    invoke(appClient(token, url), name, { body: body as Record<string, unknown> });

  return {
    server,
    apiKey: key,
    gateway,
    logs,
    async whileModel(behaviour, work) {
      server.behaviour = behaviour;
      try {
        await work();
      } finally {
        server.behaviour = "answer";
      }
    },
    analyze: call("analyze"),
    chat: call("chat"),
    async chatStream(token, body) {
      const answer = await invoke(appClient(token, gateway.url), "chat", {
        body: body as Record<string, unknown>,
        headers: { Accept: "text/event-stream" },
      });
      if (answer.status !== 200) return { ...answer, events: [] };
      const response = answer.body as Response;
      assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
      const events = (await response.text()).split("\n\n").filter((block) => block.trim()).map(
        (block) => {
          const field = (name: string) =>
            block.split("\n").find((line) => line.startsWith(`${name}: `))!.slice(name.length + 2);
          return { event: field("event"), data: JSON.parse(field("data")) };
        },
      );
      return { ...answer, events };
    },
  };
}
