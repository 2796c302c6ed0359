import { ApiError } from "./errors.ts";

export type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export function json(body: unknown, init: ResponseInit = {}): Response {
  const headers = new Headers(init.headers);
  headers.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify(body), { ...init, headers });
}

/** The body of every failure; also the data of a server-sent `error` event. */
export function errorEnvelope(error: ApiError, requestId: string) {
  return {
    error: { code: error.code, message: error.message, request_id: requestId, ...error.details },
  };
}

export function errorResponse(error: ApiError, requestId: string): Response {
  return json(errorEnvelope(error, requestId), { status: error.status, headers: error.headers });
}

/**
 * Reads the body as text, refusing it as soon as it grows past `maxBytes`, so a huge upload costs
 * at most `maxBytes` of memory whether or not the client sent an honest Content-Length.
 */
export async function readBodyText(req: Request, maxBytes: number): Promise<string> {
  const tooLarge = () =>
    new ApiError("payload_too_large", `request body is larger than ${maxBytes} bytes`);
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > maxBytes) {
    await req.body?.cancel();
    throw tooLarge();
  }
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
