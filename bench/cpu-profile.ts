import { LISTENING_MARKER } from "../local/function-worker.ts";
import { load } from "./http-load.ts";

/**
 * Where a function process spends its CPU under load: a V8 CPU profile (the `.cpuprofile` that
 * `--cpu-prof` writes elsewhere, taken here through the inspector, as `deno run` has no such flag)
 * of one function process served straight, without a gateway, summarised as its top frames by
 * self time.
 */

const ROOT = new URL("..", import.meta.url).pathname;
const WORKER_SCRIPT = `${ROOT}local/function-worker.ts`;
const SAMPLING_INTERVAL_US = 100;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Frame {
  name: string;
  where: string;
  /** Share of the process's busy time (neither idle nor the profiler's own) in the frame itself. */
  selfShare: number;
}

/** Lines of a child's stream until `found` returns a value. */
async function firstMatch<T>(
  stream: ReadableStream<Uint8Array>,
  found: (line: string) => T | undefined,
): Promise<T> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the function process ended before it was ready");
    buffered += value;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      const match = found(line);
      if (match !== undefined) {
        // Keep reading, so that a full pipe never blocks the process.
        (async () => {
          while (!(await reader.read()).done);
        })().catch(() => {});
        return match;
      }
    }
  }
}

/** A tiny Chrome DevTools Protocol client over the inspector's WebSocket. */
async function inspector(url: string) {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let next = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    waiting.get(message.id)?.(message.result);
    waiting.delete(message.id);
  };
  return {
    send<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
      const id = ++next;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve) => waiting.set(id, resolve as (result: unknown) => void));
    },
    close() {
      socket.close();
    },
  };
}

/**
 * Work the inspector adds only because it is attached: the protocol events it emits, and the copy
 * of every fetch response body it reads (Deno tees each body for the inspector's network view, so
 * the reads of the tee's branches, under `pull1Algorithm`/`pull2Algorithm`, are its own; nothing
 * in the functions tees a stream). Left out, as a process without a profiler never does it.
 */
const TEE_PULLS = new Set(["pull1Algorithm", "pull2Algorithm", "drainResponseForInspector"]);

function isProfilersOwn(functionName: string, url: string): boolean {
  return functionName.startsWith("op_inspector_") || url.includes("inspector_network_bridge") ||
    TEE_PULLS.has(functionName);
}

function topFrames(profile: CpuProfile, count: number): Frame[] {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parents = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parents.set(child, node.id);
  }
  const profilersOwn = (id: number): boolean => {
    for (let at: number | undefined = id; at !== undefined; at = parents.get(at)) {
      const { functionName, url } = nodes.get(at)!.callFrame;
      if (isProfilersOwn(functionName, url)) return true;
    }
    return false;
  };
  const selfUs = new Map<string, { name: string; where: string; us: number }>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const { functionName, url, lineNumber } = nodes.get(id)!.callFrame;
    if (functionName === "(idle)" || profilersOwn(id)) return;
    const us = profile.timeDeltas[i] ?? 0;
    busy += us;
    const file = url.replace(/^.*\/(node_modules|npm\/registry\.npmjs\.org)\//, "npm:")
      .replace(`file://${ROOT}`, "");
    const where = file ? `${file}:${lineNumber + 1}` : "";
    const key = `${functionName}@${where}`;
    const entry = selfUs.get(key) ?? { name: functionName || "(anonymous)", where, us: 0 };
    entry.us += us;
    selfUs.set(key, entry);
  });
  return [...selfUs.values()].sort((a, b) => b.us - a.us).slice(0, count)
    .map(({ name, where, us }) => ({ name, where, selfShare: us / busy }));
}

/**
 * The top `count` frames by self time of the function at `entry`, while `script` (a wrk script)
 * loads it for `seconds` with `connections` connections.
 */
export async function profileUnderLoad(
  entry: string,
  env: Record<string, string>,
  load_: { script: string; seconds: number; connections: number },
  count = 10,
): Promise<Frame[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--inspect=127.0.0.1:0",
      "--allow-net",
      "--allow-env",
      "--allow-read",
      "--allow-sys",
      "--no-check",
      WORKER_SCRIPT,
      entry,
    ],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  try {
    const [socketUrl, port] = await Promise.all([
      firstMatch(child.stderr, (line) => line.match(/(ws:\/\/\S+)/)?.[1]),
      firstMatch(
        child.stdout,
        (line) =>
          line.includes(LISTENING_MARKER)
            ? JSON.parse(line)[LISTENING_MARKER] as number
            : undefined,
      ),
    ]);
    const url = `http://127.0.0.1:${port}/`;
    // Warm it first, unprofiled: the profile is of the steady state.
    await load(url, { connections: load_.connections, seconds: 1, script: load_.script });
    const session = await inspector(socketUrl);
    try {
      await session.send("Profiler.enable");
      await session.send("Profiler.setSamplingInterval", { interval: SAMPLING_INTERVAL_US });
      await session.send("Profiler.start");
      await load(url, load_);
      const { profile } = await session.send<{ profile: CpuProfile }>("Profiler.stop");
      return topFrames(profile, count);
    } finally {
      session.close();
    }
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
}
