/**
 * A minimal RESP2 client for the local Upstash bridge: a small pool of pipelined TCP
 * connections to one redis-server. Replies keep strings as raw bytes so the bridge can
 * base64-encode exactly what Redis stored; error replies are values, not exceptions, because
 * inside a pipeline or a transaction one failing command must not hide the others' results.
 */

/** One command argument. Numbers are sent in their JavaScript string form. */
export type RespArg = string | number | Uint8Array;

/** A RESP2 reply: bytes for bulk and simple strings, numbers, null, errors, and arrays. */
export type RespReply = Uint8Array | number | null | RedisReplyError | RespReply[];

/**
 * A simple-string (status) reply such as `OK` or `PONG`. Still plain bytes; the subclass only
 * tells it apart from a bulk string, which Upstash's base64 encoding treats differently.
 */
export class SimpleString extends Uint8Array {}

/** An error reply from Redis (`-ERR ...`). */
export class RedisReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedisReplyError";
  }
}

/** Redis could not be reached, went away mid-request, or did not answer in time. */
export class RedisConnectionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RedisConnectionError";
  }
}

export interface RespClientOptions {
  hostname?: string;
  port: number;
  /** Connections kept open; commands are pipelined on each. Default 4. */
  poolSize?: number;
  /** A connect attempt that takes longer fails (e.g. a host that drops packets). Default 1000. */
  connectTimeoutMs?: number;
  /**
   * A batch still unanswered after this long fails, and its connection with it: replies are
   * matched purely by order, so a connection that lost track of one cannot be trusted again.
   * Default 10000.
   */
  replyTimeoutMs?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CR = 13;
const LF = 10;
const INCOMPLETE = Symbol("incomplete");

/** Encodes commands as RESP arrays of bulk strings, all in one buffer so one write sends them. */
export function encodeCommands(commands: readonly (readonly RespArg[])[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let size = 0;
  const push = (part: Uint8Array) => {
    parts.push(part);
    size += part.length;
  };
  for (const command of commands) {
    push(encoder.encode(`*${command.length}\r\n`));
    for (const arg of command) {
      const bytes = arg instanceof Uint8Array ? arg : encoder.encode(String(arg));
      push(encoder.encode(`$${bytes.length}\r\n`));
      push(bytes);
      push(encoder.encode("\r\n"));
    }
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Incremental reply parser. Bytes arrive in arbitrary chunks; a reply is only consumed once it
 * is complete, so a partial one is simply parsed again from its start when more bytes arrive.
 */
export class ReplyParser {
  #buf = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;

  push(chunk: Uint8Array): void {
    if (this.#end + chunk.length > this.#buf.length) {
      const live = this.#end - this.#start;
      const needed = live + chunk.length;
      const target = needed > this.#buf.length
        ? new Uint8Array(Math.max(needed, this.#buf.length * 2))
        : this.#buf;
      target.set(this.#buf.subarray(this.#start, this.#end), 0);
      this.#buf = target;
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** The next complete reply, or undefined when more bytes are needed. */
  next(): { value: RespReply } | undefined {
    const parsed = this.#parse(this.#start);
    if (parsed === INCOMPLETE) return undefined;
    this.#start = parsed[1];
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return { value: parsed[0] };
  }

  #parse(pos: number): [RespReply, number] | typeof INCOMPLETE {
    if (pos >= this.#end) return INCOMPLETE;
    const type = this.#buf[pos];
    const lineEnd = this.#lineEnd(pos + 1);
    if (lineEnd === INCOMPLETE) return INCOMPLETE;
    const line = this.#buf.subarray(pos + 1, lineEnd);
    const text = () => decoder.decode(line);
    const next = lineEnd + 2;
    switch (type) {
      case 0x2b /* + */:
        return [new SimpleString(line), next];
      case 0x2d /* - */:
        return [new RedisReplyError(text()), next];
      case 0x3a /* : */:
        return [Number(text()), next];
      case 0x24 /* $ */: {
        const length = Number(text());
        if (length < 0) return [null, next];
        if (next + length + 2 > this.#end) return INCOMPLETE;
        return [this.#buf.slice(next, next + length), next + length + 2];
      }
      case 0x2a /* * */: {
        const count = Number(text());
        if (count < 0) return [null, next];
        const items: RespReply[] = [];
        let cursor = next;
        for (let i = 0; i < count; i++) {
          const item = this.#parse(cursor);
          if (item === INCOMPLETE) return INCOMPLETE;
          items.push(item[0]);
          cursor = item[1];
        }
        return [items, cursor];
      }
      default:
        throw new RedisConnectionError(`unexpected RESP type byte 0x${type.toString(16)}`);
    }
  }

  #lineEnd(pos: number): number | typeof INCOMPLETE {
    for (let i = pos; i + 1 < this.#end; i++) {
      if (this.#buf[i] === CR && this.#buf[i + 1] === LF) return i;
    }
    return INCOMPLETE;
  }
}

interface Pending {
  count: number;
  replies: RespReply[];
  resolve: (replies: RespReply[]) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** One TCP connection; replies are matched to batches strictly in the order they were written. */
class Connection {
  readonly #conn: Deno.TcpConn;
  readonly #parser = new ReplyParser();
  readonly #pending: Pending[] = [];
  #writes: Promise<void> = Promise.resolve();
  #closedBy: Error | undefined;
  readonly readLoop: Promise<void>;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.readLoop = this.#read();
  }

  static async open(hostname: string, port: number, timeoutMs: number): Promise<Connection> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    try {
      const conn = await Deno.connect({ hostname, port, signal: abort.signal });
      conn.setNoDelay(true);
      return new Connection(conn);
    } catch (error) {
      const why = abort.signal.aborted ? `timed out after ${timeoutMs} ms` : errorText(error);
      throw new RedisConnectionError(`Redis at ${hostname}:${port} is unreachable (${why})`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  get alive(): boolean {
    return this.#closedBy === undefined;
  }

  send(bytes: Uint8Array, count: number, replyTimeoutMs: number): Promise<RespReply[]> {
    if (this.#closedBy) return Promise.reject(this.#closedBy);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.destroy(new RedisConnectionError(`Redis did not reply within ${replyTimeoutMs} ms`));
      }, replyTimeoutMs);
      this.#pending.push({ count, replies: [], resolve, reject, timer });
      // Chained so that each batch's bytes go out contiguously, in the same order as #pending.
      this.#writes = this.#writes.then(() => this.#writeAll(bytes)).catch((error) =>
        this.destroy(new RedisConnectionError(`lost Redis connection: ${errorText(error)}`))
      );
    });
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    if (this.#closedBy) throw this.#closedBy;
    for (let offset = 0; offset < bytes.length;) {
      offset += await this.#conn.write(bytes.subarray(offset));
    }
  }

  async #read(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (this.#closedBy === undefined) {
        const n = await this.#conn.read(chunk);
        if (n === null) throw new Error("Redis closed the connection");
        this.#parser.push(chunk.subarray(0, n));
        for (let reply = this.#parser.next(); reply; reply = this.#parser.next()) {
          this.#deliver(reply.value);
        }
      }
    } catch (error) {
      this.destroy(
        error instanceof RedisConnectionError
          ? error
          : new RedisConnectionError(`lost Redis connection: ${errorText(error)}`, {
            cause: error,
          }),
      );
    }
  }

  #deliver(reply: RespReply): void {
    const head = this.#pending[0];
    if (!head) throw new RedisConnectionError("Redis sent a reply nobody asked for");
    head.replies.push(reply);
    if (head.replies.length === head.count) {
      this.#pending.shift();
      clearTimeout(head.timer);
      head.resolve(head.replies);
    }
  }

  destroy(reason: Error): void {
    if (this.#closedBy) return;
    this.#closedBy = reason;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer; nothing left to release.
    }
    for (const pending of this.#pending.splice(0)) {
      clearTimeout(pending.timer);
      pending.reject(reason);
    }
  }
}

/**
 * A small pool of pipelined connections. Each batch goes to one connection in one write, so a
 * MULTI ... EXEC block can never interleave with another request's commands.
 */
export class RespClient {
  readonly #hostname: string;
  readonly #port: number;
  readonly #connectTimeoutMs: number;
  readonly #replyTimeoutMs: number;
  readonly #slots: (Connection | Promise<Connection> | undefined)[];
  readonly #opened = new Set<Connection>();
  #next = 0;
  #closed = false;

  constructor(opts: RespClientOptions) {
    this.#hostname = opts.hostname ?? "127.0.0.1";
    this.#port = opts.port;
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
    this.#replyTimeoutMs = opts.replyTimeoutMs ?? 10_000;
    this.#slots = new Array(Math.max(1, opts.poolSize ?? 4)).fill(undefined);
  }

  /** Sends the commands back to back on one connection and returns their replies in order. */
  async batch(commands: readonly (readonly RespArg[])[]): Promise<RespReply[]> {
    if (commands.length === 0) return [];
    const conn = await this.#acquire();
    return conn.send(encodeCommands(commands), commands.length, this.#replyTimeoutMs);
  }

  /** Sends one command; an error reply is thrown as a RedisReplyError. */
  async command(...args: RespArg[]): Promise<RespReply> {
    const [reply] = await this.batch([args]);
    if (reply instanceof RedisReplyError) throw reply;
    return reply;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled(this.#slots);
    const closing = new RedisConnectionError("Redis client closed");
    for (const conn of this.#opened) conn.destroy(closing);
    await Promise.all([...this.#opened].map((conn) => conn.readLoop));
    this.#opened.clear();
    this.#slots.fill(undefined);
  }

  #acquire(): Promise<Connection> {
    if (this.#closed) return Promise.reject(new RedisConnectionError("Redis client closed"));
    const index = this.#next++ % this.#slots.length;
    const slot = this.#slots[index];
    if (slot instanceof Promise) return slot;
    if (slot?.alive) return Promise.resolve(slot);
    // A dead or missing connection is replaced on demand: while Redis is down each attempt is
    // refused at once, and the first request after Redis comes back simply reconnects.
    const connecting = Connection.open(this.#hostname, this.#port, this.#connectTimeoutMs).then(
      (conn) => {
        this.#opened.add(conn);
        conn.readLoop.then(() => this.#opened.delete(conn));
        if (this.#closed) conn.destroy(new RedisConnectionError("Redis client closed"));
        this.#slots[index] = conn;
        return conn;
      },
      (error) => {
        this.#slots[index] = undefined;
        throw error;
      },
    );
    this.#slots[index] = connecting;
    return connecting;
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
