import assert from "node:assert/strict";
import { parse as parseYaml } from "npm:yaml@2.9.1";
import { SUPABASE_CLI } from "../local/dependencies.ts";

/**
 * The GitHub workflows a fork uses as they are: valid YAML, every secret they read documented in
 * docs/deploying.md, and every Supabase CLI command they run (with its flags) known to the CLI
 * pinned in tools/.
 */

const ROOT = new URL("..", import.meta.url);
const WORKFLOWS = ["ci.yml", "deploy.yml"];

interface Step {
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}

interface Workflow {
  on: Record<string, unknown>;
  jobs: Record<string, { steps: Step[] }>;
}

async function workflow(name: string): Promise<{ text: string; parsed: Workflow }> {
  const text = await Deno.readTextFile(new URL(`.github/workflows/${name}`, ROOT));
  return { text, parsed: parseYaml(text) as Workflow };
}

function steps(parsed: Workflow): Step[] {
  return Object.values(parsed.jobs).flatMap((job) => job.steps);
}

/** `supabase <command...> [--flag ...]` as the `run:` scripts spell it, flags by name. */
function cliCommands(parsed: Workflow): { command: string[]; flags: string[] }[] {
  const found = [];
  for (const { run } of steps(parsed)) {
    for (const line of (run ?? "").split("\n")) {
      const match = line.match(/(?:^|\s)(?:tools\/node_modules\/\.bin\/)?supabase\s+(.*)$/);
      if (!match) continue;
      const words = match[1].split(/\s+/);
      const command = [];
      for (const word of words) {
        if (!/^[a-z][a-z-]*$/.test(word)) break;
        command.push(word);
      }
      const flags = words.filter((w) => w.startsWith("--")).map((w) => w.replace(/=.*$/, ""));
      found.push({ command, flags });
    }
  }
  return found;
}

async function cliHelp(command: string[]): Promise<{ code: number; text: string }> {
  const { code, stdout, stderr } = await new Deno.Command(SUPABASE_CLI, {
    args: [...command, "--help"],
    env: { SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1", SUPABASE_NO_UPDATE_NOTIFIER: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code, text: decoder.decode(stdout) + decoder.decode(stderr) };
}

for (const name of WORKFLOWS) {
  Deno.test(`${name} reads only secrets that docs/deploying.md documents`, async () => {
    const { text } = await workflow(name);
    const docs = await Deno.readTextFile(new URL("docs/deploying.md", ROOT));
    const secrets = [...new Set([...text.matchAll(/secrets\.([A-Za-z0-9_]+)/g)].map((m) => m[1]))];
    for (const secret of secrets) {
      assert.ok(docs.includes(`\`${secret}\``), `${secret} is not documented in docs/deploying.md`);
    }
  });

  Deno.test(`${name} runs only Supabase CLI commands and flags the pinned CLI has`, async () => {
    const { parsed } = await workflow(name);
    for (const { command, flags } of cliCommands(parsed)) {
      const help = await cliHelp(command);
      assert.equal(help.code, 0, `supabase ${command.join(" ")} --help: ${help.text}`);
      assert.match(help.text, new RegExp(`USAGE\\s+supabase ${command.join(" ")} `));
      for (const flag of flags) {
        assert.ok(help.text.includes(`${flag} `) || help.text.includes(`${flag}[`), flag);
      }
    }
  });
}

Deno.test("the CI workflow runs the README's test command on a fresh runner", async () => {
  const { parsed } = await workflow("ci.yml");
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  assert.match(readme, /^npm test\s/m);
  assert.ok(steps(parsed).some((step) => step.uses?.startsWith("actions/setup-node@")));
  assert.ok(steps(parsed).some((step) => step.run?.trim() === "npm test"));
});

Deno.test(
  "the deploy workflow links, pushes the migrations, deploys the functions and checks health",
  async () => {
    const { parsed } = await workflow("deploy.yml");
    assert.deepEqual(Object.keys(parsed.on).sort(), ["push", "workflow_dispatch"]);
    assert.deepEqual((parsed.on.push as { tags: string[] }).tags, ["v*"]);
    assert.deepEqual(
      cliCommands(parsed).map(({ command }) => command.join(" ")),
      ["link", "db push", "functions deploy"],
    );
    const last = steps(parsed).at(-1)?.run ?? "";
    assert.match(last, /\/functions\/v1\/health/);
    assert.match(last, /"200"/);
  },
);
