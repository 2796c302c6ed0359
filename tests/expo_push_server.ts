/**
 * A local Expo-push-compatible server for the notification tests: `POST /--/api/v2/push/send`
 * (an array of messages, gzip-compressed when large, as expo-server-sdk sends them; answers
 * `{"data": [ticket, ...]}`, one ticket per message) and `POST /--/api/v2/push/getReceipts`
 * (`{"ids": [...]}`; answers `{"data": {id: receipt}}`), in Expo's JSON shapes. It keeps every
 * message it accepted, and can be told to refuse requests or to report devices unregistered.
 */

export interface PushMessage {
  to: string;
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
}

export interface ExpoPushServer {
  /** What `EXPO_BASE_URL` is set to. */
  url: string;
  /** Every message accepted by push/send, in order. */
  messages: PushMessage[];
  /** Requests to push/send, refused or not. */
  sendRequests: number;
  /** The next this many push/send requests get this HTTP status and Expo's error body. */
  failSends: { status: number; times: number };
  /** Tokens whose receipts say `DeviceNotRegistered`. */
  unregistered: Set<string>;
  /** Tokens whose tickets already say `DeviceNotRegistered`. */
  refusedAtSend: Set<string>;
  /** Receipts asked for, by ticket id. */
  receiptRequests: string[];
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function jsonBody(req: Request): Promise<unknown> {
  const raw = req.headers.get("content-encoding") === "gzip"
    ? req.body!.pipeThrough(new DecompressionStream("gzip"))
    : req.body!;
  return JSON.parse(await new Response(raw).text());
}

const notRegistered = (token: string) => ({
  status: "error",
  message: `"${token}" is not a registered push notification recipient`,
  details: { error: "DeviceNotRegistered", expoPushToken: token },
});

export function startExpoPushServer(): ExpoPushServer {
  const tickets = new Map<string, string>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method === "POST" && path === "/--/api/v2/push/send") {
      state.sendRequests++;
      const messages = await jsonBody(req) as PushMessage[];
      if (state.failSends.times > 0) {
        state.failSends.times--;
        const code = state.failSends.status === 429 ? "TOO_MANY_REQUESTS" : "INTERNAL_SERVER_ERROR";
        return Response.json(
          { errors: [{ code, message: "refused by the test push server" }] },
          { status: state.failSends.status },
        );
      }
      const data = messages.map((message) => {
        if (state.refusedAtSend.has(message.to)) return notRegistered(message.to);
        state.messages.push(message);
        const id = crypto.randomUUID();
        tickets.set(id, message.to);
        return { status: "ok", id };
      });
      return Response.json({ data });
    }
    if (req.method === "POST" && path === "/--/api/v2/push/getReceipts") {
      const { ids } = await jsonBody(req) as { ids: string[] };
      state.receiptRequests.push(...ids);
      const data = Object.fromEntries(ids.flatMap((id) => {
        const token = tickets.get(id);
        if (!token) return [];
        return [[id, state.unregistered.has(token) ? notRegistered(token) : { status: "ok" }]];
      }));
      return Response.json({ data });
    }
    return Response.json({ errors: [{ code: "NOT_FOUND", message: "not found" }] }, {
      status: 404,
    });
  });
  const close = () => server.shutdown();
  const state: ExpoPushServer = {
    url: `http://127.0.0.1:${server.addr.port}`,
    messages: [],
    sendRequests: 0,
    failSends: { status: 503, times: 0 },
    unregistered: new Set(),
    refusedAtSend: new Set(),
    receiptRequests: [],
    close,
    [Symbol.asyncDispose]: close,
  };
  return state;
}
