import { LOCAL_PORTS, LOCAL_STATE_DIR } from "../local/keys.ts";
import { run } from "../local/process.ts";

/**
 * CPU time of the processes that serve a request on this machine's local stack, from /proc, in
 * seconds (user + system). Only this stack's processes are counted (other stacks may run beside
 * it), and every process that did work is: Postgres backends that ended are in their postmaster's
 * reaped-children totals, so a total never goes down between two readings.
 */

const TICKS_PER_SECOND = 100;

interface Ticks {
  own: number;
  /** Of the children it has waited for (ended ones). */
  reaped: number;
}

async function ticksOf(pid: number): Promise<Ticks | null> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => null);
  if (!stat) return null;
  // Fields after the command name: state is 0, utime 11, stime 12, cutime 13, cstime 14.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  return { own: fields[11] + fields[12], reaped: fields[13] + fields[14] };
}

async function children(pid: number): Promise<number[]> {
  return (await run("pgrep", ["-P", String(pid)]).catch(() => "")).split("\n").filter(Boolean)
    .map(Number);
}

async function cmdline(pid: number): Promise<string> {
  return (await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "")).replaceAll("\0", " ");
}

/** One process alone. */
async function processSeconds(pid: number): Promise<number> {
  return ((await ticksOf(pid))?.own ?? 0) / TICKS_PER_SECOND;
}

/** A process and all its children, those still running and those that ended. */
async function treeSeconds(pid: number): Promise<number> {
  const root = await ticksOf(pid);
  if (!root) return 0;
  let ticks = root.own + root.reaped;
  for (const child of await children(pid)) {
    const t = await ticksOf(child);
    if (t) ticks += t.own + t.reaped;
  }
  return ticks / TICKS_PER_SECOND;
}

/** The function processes started by the gateway running in this process, for `fn`. */
async function functionSeconds(fn: string): Promise<number> {
  let total = 0;
  for (const pid of await children(Deno.pid)) {
    if ((await cmdline(pid)).includes(`/${fn}/index.ts`)) total += await processSeconds(pid);
  }
  return total;
}

async function pidFile(path: string): Promise<number | null> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const pid = Number(text.split("\n")[0].trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

async function redisSeconds(): Promise<number> {
  const pids = (await run("pgrep", ["-f", `redis-server 127.0.0.1:${LOCAL_PORTS.redis}`])
    .catch(() => "")).split("\n").filter(Boolean).map(Number);
  let total = 0;
  for (const pid of pids) total += await processSeconds(pid);
  return total;
}

/** CPU seconds so far of each process serving `fn`'s requests, by what it is. */
export async function cpuSeconds(fn: string): Promise<Record<string, number>> {
  const stack = await pidFile(`${LOCAL_STATE_DIR}/stack.pid`);
  const postmaster = await pidFile(`${LOCAL_STATE_DIR}/postgres/postmaster.pid`);
  return {
    "function process": await functionSeconds(fn),
    "gateway (this benchmark's process)": await processSeconds(Deno.pid),
    "Upstash bridge (the stack's process)": stack ? await processSeconds(stack) : 0,
    "redis-server": await redisSeconds(),
    "Postgres (postmaster and every backend, ended ones included)": postmaster
      ? await treeSeconds(postmaster)
      : 0,
  };
}

/** µs per request of each process between two readings; never below zero. */
export function perRequest(
  before: Record<string, number>,
  after: Record<string, number>,
  requests: number,
): Record<string, number> {
  return Object.fromEntries(
    Object.keys(after).map((name) => [
      name,
      Math.max(0, ((after[name] - (before[name] ?? 0)) / requests) * 1e6),
    ]),
  );
}
