/**
 * What each function loads, from `deno info --json` of its `index.ts`, in three stages: the
 * modules imported statically (loaded when the function boots, enough for a CORS preflight),
 * those its handler module adds (loaded by `serve` on the first other request), and those
 * reached only through a dynamic `import()` of an npm package (loaded on first use); the npm
 * packages among them, and their size. npm packages are sized as `deno info` sizes them: the
 * package folder, with the packages it depends on.
 *
 * `EXPECTED_PACKAGES` is the npm packages each function is meant to import; the benchmark and
 * tests/module_graph_test.ts hold every function to it.
 */

export const FUNCTIONS_DIR = new URL("../supabase/functions/", import.meta.url).pathname;

/** The shared pipeline's own, loaded with the handler: Upstash, the rate limiter, JWT checks and schemas. */
const PIPELINE = ["@upstash/ratelimit", "@upstash/redis", "jose", "zod"];

/** postgres.js (`_shared/db.ts`): loaded on the first statement, which a cached GET never makes. */
const DATABASE = "postgres";

/** Error tracking (`_shared/error-tracking.ts`): loaded on the first report, only with a DSN. */
const ERROR_TRACKING = "@sentry/deno";

export interface ExpectedPackages {
  /** Loaded with the handler module, on the first request that is not a preflight. */
  withHandler: string[];
  /** Large SDKs only some requests need, so they must be imported on first use, not at boot. */
  onFirstUse: string[];
}

export const EXPECTED_PACKAGES: Readonly<Record<string, ExpectedPackages>> = {
  health: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  profile: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  usage: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  history: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  sync: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  activities: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  statistics: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  analyze: {
    withHandler: PIPELINE,
    onFirstUse: [DATABASE, ERROR_TRACKING, "openai", "@supabase/supabase-js"],
  },
  chat: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING, "openai"] },
  billing: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING, "stripe"] },
  "stripe-webhook": { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING, "stripe"] },
  "process-jobs": {
    withHandler: PIPELINE,
    onFirstUse: [
      DATABASE,
      ERROR_TRACKING,
      "stripe",
      "@supabase/supabase-js",
      "openai",
      "expo-server-sdk",
    ],
  },
  devices: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING, "expo-server-sdk"] },
  recommendations: { withHandler: PIPELINE, onFirstUse: [DATABASE, ERROR_TRACKING] },
  uploads: {
    withHandler: PIPELINE,
    onFirstUse: [DATABASE, ERROR_TRACKING, "@supabase/supabase-js"],
  },
};

export interface GraphPart {
  /** Local (file:) modules. */
  localModules: number;
  localBytes: number;
  /** The npm packages imported by a local module, by name, sorted. */
  packages: string[];
  /** Those and the packages they depend on, as `name@version`. */
  allPackages: string[];
  npmBytes: number;
}

export interface ModuleGraph {
  /** What is loaded when the function boots: static imports only. */
  boot: GraphPart;
  /** What the first request that is not a preflight loads: the handler module, statically. */
  handler: GraphPart;
  /** Everything it may load, dynamic imports included. */
  full: GraphPart;
}

interface InfoDependency {
  code?: { specifier: string };
  isDynamic?: boolean;
}

interface InfoModule {
  specifier: string;
  kind: string;
  size?: number;
  npmPackage?: string;
  dependencies?: InfoDependency[];
}

interface InfoPackage {
  name: string;
  dependencies: string[];
  localPath?: string;
}

interface Info {
  roots: string[];
  modules: InfoModule[];
  redirects: Record<string, string>;
  npmPackages: Record<string, InfoPackage>;
}

/** Every function folder with an `index.ts`, sorted. */
export async function functionNames(dir = FUNCTIONS_DIR): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.isDirectory || entry.name.startsWith("_")) continue;
    const index = await Deno.stat(`${dir}${entry.name}/index.ts`).catch(() => null);
    if (index?.isFile) names.push(entry.name);
  }
  return names.sort();
}

const folderSizes = new Map<string, Promise<number>>();

async function sizeOfFolder(path: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(path)) {
    const child = `${path}/${entry.name}`;
    if (entry.isDirectory) total += await sizeOfFolder(child);
    else if (entry.isFile) total += (await Deno.stat(child)).size;
  }
  return total;
}

function packageSize(pkg: InfoPackage): Promise<number> {
  if (!pkg.localPath) return Promise.resolve(0);
  let size = folderSizes.get(pkg.localPath);
  if (!size) {
    size = sizeOfFolder(pkg.localPath);
    folderSizes.set(pkg.localPath, size);
  }
  return size;
}

/** Which dynamic imports a part follows: none, those of local modules (the handler), or all. */
type Follow = "static" | "local" | "all";

async function part(info: Info, follow: Follow): Promise<GraphPart> {
  const modules = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const pending = [...info.roots];
  const packages = new Set<string>();
  while (pending.length > 0) {
    const raw = pending.pop()!;
    const specifier = info.redirects[raw] ?? raw;
    if (seen.has(specifier)) continue;
    seen.add(specifier);
    const module = modules.get(specifier);
    if (module?.npmPackage) packages.add(module.npmPackage);
    for (const dependency of module?.dependencies ?? []) {
      // Type-only imports have no `code`: they are erased and never loaded.
      if (!dependency.code) continue;
      const local = dependency.code.specifier.startsWith("file:");
      if (dependency.isDynamic && !(follow === "all" || (follow === "local" && local))) continue;
      pending.push(dependency.code.specifier);
    }
  }
  const all = new Set<string>();
  const queue = [...packages];
  while (queue.length > 0) {
    const id = queue.pop()!;
    if (all.has(id)) continue;
    all.add(id);
    queue.push(...(info.npmPackages[id]?.dependencies ?? []));
  }
  const local = [...seen].map((s) => modules.get(s)).filter((m) => m?.kind === "esm");
  const sizes = await Promise.all([...all].map((id) => packageSize(info.npmPackages[id])));
  return {
    localModules: local.length,
    localBytes: local.reduce((sum, m) => sum + (m?.size ?? 0), 0),
    packages: [...packages].map((id) => info.npmPackages[id].name).sort(),
    allPackages: [...all].map((id) => id.split("_")[0]).sort(),
    npmBytes: sizes.reduce((a, b) => a + b, 0),
  };
}

/**
 * The module graph of the function at `entry` (its `index.ts`), resolved through the function's
 * own `deno.json` (if it has one) as `supabase functions deploy` bundles it: a package missing
 * from it fails here.
 */
export async function moduleGraph(entry: string): Promise<ModuleGraph> {
  const config = entry.replace(/index\.ts$/, "deno.json");
  const own = await Deno.stat(config).then(() => ["--config", config], () => []);
  const output = await new Deno.Command(Deno.execPath(), {
    // --no-lock: deno.lock at the root is the project's; a function folder gets none.
    args: ["info", "--json", "--no-lock", ...own, entry],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  const info: Info = JSON.parse(new TextDecoder().decode(output.stdout));
  return {
    boot: await part(info, "static"),
    handler: await part(info, "local"),
    full: await part(info, "all"),
  };
}

/** The packages a function loads on first use only: in its full graph, not with its handler. */
export function packagesOnFirstUse(graph: ModuleGraph): string[] {
  return graph.full.packages.filter((name) => !graph.handler.packages.includes(name));
}
