/**
 * A local OpenAI-compatible server for the AI functions' tests: `POST /v1/chat/completions`,
 * plain and streamed (`data: {chunk}` ... `data: [DONE]`). Requests that ask for a JSON answer
 * (`response_format`) get a valid AnalysisResult whose summary quotes the input; other requests
 * get `replyTo(last user message)`. It counts every call and keeps every request body, and
 * `behaviour` switches how it answers.
 */

export type Behaviour =
  /** Answer as OpenAI would. */
  | "answer"
  /** 500 with an error body (the SDK retries it). */
  | "fail"
  /** Never send the response headers (the SDK times out, then retries). */
  | "hang"
  /** Answer with content that is not JSON. */
  | "invalid_json"
  /** Stream the first piece of the reply, then break the connection. */
  | "break_stream"
  /** Start the stream (status 200, the role chunk), then break it before any text. */
  | "break_before_output"
  /**
   * Answer with text Postgres cannot store as it is: U+0000 and an unpaired surrogate in the
   * reply, and in an analysis's summary and a score's name.
   */
  | "unstorable_output"
  /** Stream the first piece of the reply, then go silent. */
  | "stall_stream";

export interface OpenAiServer {
  /** Base of the server, without `/v1`. */
  url: string;
  behaviour: Behaviour;
  /** Every call to the completions endpoint, answered or not. */
  calls: number;
  // deno-lint-ignore no-explicit-any
  requests: any[];
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The reply to a chat whose last user message is `message`; several words, so it streams. */
export function replyTo(message: string): string {
  return `You wrote ${message.length} characters. Here is a deterministic answer to them.`;
}

interface Part {
  type: string;
  text?: string;
  image_url?: { url: string };
}

function lastUserContent(messages: { role: string; content: string | Part[] }[]): Part[] {
  const last = messages.filter((m) => m.role === "user").at(-1);
  if (!last) return [];
  return typeof last.content === "string" ? [{ type: "text", text: last.content }] : last.content;
}

/** A valid AnalysisResult that quotes the input, so a test can find what it caused. */
function analysisOf(parts: Part[]) {
  const subject = parts.at(-1);
  const quoted = subject?.type === "image_url" ? subject.image_url!.url : subject?.text ?? "";
  return {
    summary: `Analysed: ${quoted.slice(0, 200)}`,
    scores: { clarity: 80, risk: 15 },
    findings: [{ title: "Readable", detail: "The input is easy to follow.", severity: "low" }],
    recommendations: ["Keep it short."],
  };
}

function completion(model: string, content: string) {
  return {
    id: `chatcmpl-${crypto.randomUUID()}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{
      index: 0,
      message: { role: "assistant", content, refusal: null },
      finish_reason: "stop",
      logprobs: null,
    }],
    usage: { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 },
  };
}

function chunk(id: string, model: string, delta: Record<string, string>, finish: string | null) {
  return {
    id,
    object: "chat.completion.chunk",
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  };
}

export function startOpenAiServer(apiKey: string): OpenAiServer {
  // What hangs is released by close(), so the server can shut down.
  const waiting = new Set<() => void>();
  const never = () => new Promise<void>((resolve) => waiting.add(resolve));

  /**
   * The reply as completion chunks, one piece per read: a chunk is handed over before the next
   * is made, so what breaks or stalls after the first piece has sent that piece.
   */
  function stream(model: string, content: string, behaviour: Behaviour) {
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const encoder = new TextEncoder();
    const event = (data: unknown) => encoder.encode(`data: ${JSON.stringify(data)}\n\n`);
    const events = [
      event(chunk(id, model, { role: "assistant", content: "" }, null)),
      ...content.split(/(?<= )/).map((piece) => event(chunk(id, model, { content: piece }, null))),
      event(chunk(id, model, {}, "stop")),
      encoder.encode("data: [DONE]\n\n"),
    ];
    let sent = 0;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent === 1 && behaviour === "break_before_output") {
          return controller.error(new Error("connection broken on purpose"));
        }
        if (sent === 2 && behaviour === "break_stream") {
          return controller.error(new Error("connection broken on purpose"));
        }
        if (sent === 2 && behaviour === "stall_stream") return await never();
        if (sent === events.length) return controller.close();
        controller.enqueue(events[sent++]);
      },
    }, { highWaterMark: 0 });
  }

  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    // A broken stream is on purpose here; without this Deno prints it as an error.
    onError: () => new Response(null, { status: 500 }),
  }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method !== "POST" || path !== "/v1/chat/completions") {
      return Response.json({ error: { message: "not found", type: "invalid_request_error" } }, {
        status: 404,
      });
    }
    state.calls++;
    if (req.headers.get("authorization") !== `Bearer ${apiKey}`) {
      return Response.json({
        error: { message: "Incorrect API key provided", type: "invalid_request_error" },
      }, { status: 401 });
    }
    const body = await req.json();
    state.requests.push(body);
    const behaviour = state.behaviour;
    if (behaviour === "fail") {
      return Response.json({ error: { message: "upstream exploded", type: "server_error" } }, {
        status: 500,
      });
    }
    if (behaviour === "hang") {
      await never();
      return new Response(null, { status: 499 });
    }
    const analysis = analysisOf(lastUserContent(body.messages));
    const reply = replyTo(lastUserContent(body.messages).map((p) => p.text ?? "").join(""));
    const content = behaviour === "invalid_json"
      ? "this is not JSON"
      : behaviour === "unstorable_output"
      ? (body.response_format
        ? JSON.stringify({
          ...analysis,
          summary: `${analysis.summary}\u0000\ud800`,
          scores: { "nul\u0000": 50 },
        })
        : `${reply}\u0000\ud800`)
      : body.response_format
      ? JSON.stringify(analysis)
      : reply;
    if (body.stream) {
      return new Response(stream(body.model, content, behaviour), {
        headers: { "content-type": "text/event-stream" },
      });
    }
    return Response.json(completion(body.model, content));
  });

  const close = async () => {
    for (const release of waiting) release();
    await server.shutdown();
  };
  const state: OpenAiServer = {
    url: `http://127.0.0.1:${server.addr.port}`,
    behaviour: "answer",
    calls: 0,
    requests: [],
    close,
    [Symbol.asyncDispose]: close,
  };
  return state;
}
