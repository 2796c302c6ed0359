/** Small helpers for the local stack's scripts: run a command, probe a port, wait for a URL. */

export class CommandFailed extends Error {
  constructor(command: string, readonly code: number, readonly output: string) {
    super(`\`${command}\` exited with ${code}${output ? `:\n${output}` : ""}`);
    this.name = "CommandFailed";
  }
}

/** Runs a command to completion; its output is shown only when it fails. */
export async function run(
  command: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  const stdout = decoder.decode(result.stdout);
  if (!result.success) {
    const output = (stdout + decoder.decode(result.stderr)).trim().split("\n").slice(-40).join(
      "\n",
    );
    throw new CommandFailed([command, ...args].join(" "), result.code, output);
  }
  return stdout;
}

export async function commandExists(command: string): Promise<boolean> {
  const { code } = await new Deno.Command("sh", {
    args: ["-c", `command -v ${command}`],
    stdout: "null",
    stderr: "null",
  }).output();
  return code === 0;
}

export function portInUse(port: number, hostname = "127.0.0.1"): boolean {
  try {
    Deno.listen({ port, hostname }).close();
    return false;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) return true;
    throw error;
  }
}

/** Polls until `probe` resolves true, or throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} did not become ready within ${timeoutMs / 1000} s`);
}

export function processAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}
