/**
 * A small reader of `text/event-stream` bodies on nothing but web APIs (ReadableStream,
 * TextDecoder), so it runs in React Native as in Deno and browsers.
 */

export interface ServerSentEvent {
  event: string;
  data: string;
}

const NEWLINE = 0x0a;

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.byteLength === 0) return b;
  const joined = new Uint8Array(a.byteLength + b.byteLength);
  joined.set(a);
  joined.set(b, a.byteLength);
  return joined;
}

/**
 * The body's complete lines, without their line feeds, as they arrive. Bytes are decoded a
 * whole line at a time: a newline byte never occurs inside a multi-byte UTF-8 character, so a
 * character split across two chunks is never decoded in halves, and no `{ stream: true }`
 * decoding (which not every React Native TextDecoder implements) is needed. What follows the
 * last line feed is an unfinished line, which the event-stream format discards.
 */
async function* linesOf(response: Response): AsyncGenerator<string> {
  if (!response.body) {
    // React Native's built-in fetch has no streaming body: the whole text arrives at once.
    yield* (await response.text()).split("\n").slice(0, -1);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending: Uint8Array = new Uint8Array(0);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      const bytes = concat(pending, value);
      const end = bytes.lastIndexOf(NEWLINE) + 1;
      pending = bytes.slice(end);
      if (end > 0) yield* decoder.decode(bytes.subarray(0, end)).split("\n").slice(0, -1);
    }
  } finally {
    // Stops the transfer when the reader leaves early; after the end it does nothing.
    await reader.cancel().catch(() => {});
  }
}

/** The events of an event-stream response, in order: `event:` and `data:` fields, per the spec. */
export async function* serverSentEvents(response: Response): AsyncGenerator<ServerSentEvent> {
  let event = "";
  let data: string[] = [];
  for await (const raw of linesOf(response)) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line === "") {
      if (data.length > 0) yield { event: event || "message", data: data.join("\n") };
      event = "";
      data = [];
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
}
