import { LOCAL_PORTS } from "./keys.ts";
import { run, waitFor } from "./process.ts";

/**
 * Debian's redis-server as a daemon with no persistence: the local stack's cache is disposable.
 * Tests stop and start it to prove the functions survive a Redis outage.
 */
export class LocalRedis {
  readonly dir: string;

  constructor(stateDir: string, readonly port: number = LOCAL_PORTS.redis) {
    this.dir = `${stateDir}/redis`;
  }

  private cli(...args: string[]) {
    return run("redis-cli", ["-h", "127.0.0.1", "-p", String(this.port), ...args]);
  }

  async running(): Promise<boolean> {
    try {
      return (await this.cli("ping")).trim() === "PONG";
    } catch {
      return false;
    }
  }

  async start() {
    await Deno.mkdir(this.dir, { recursive: true });
    await run("redis-server", [
      "--bind",
      "127.0.0.1",
      "--port",
      String(this.port),
      "--dir",
      this.dir,
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "yes",
      "--pidfile",
      `${this.dir}/redis.pid`,
      "--logfile",
      `${this.dir}/redis.log`,
    ]);
    await waitFor("redis", () => this.running(), 10_000);
  }

  async stop() {
    if (!(await this.running())) return;
    await this.cli("shutdown", "nosave").catch(() => {});
    await waitFor("redis shutdown", async () => !(await this.running()), 10_000);
  }
}
