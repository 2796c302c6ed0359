import { run } from "./process.ts";

/**
 * Installs what the local stack needs when it is missing, so the Quick start works on a fresh
 * Debian machine that has only Node.js and npm: Debian's Postgres 15 with its extensions,
 * pg_prove, Redis, and the npm tooling (the Supabase CLI).
 */

const PROJECT_ROOT = new URL("..", import.meta.url).pathname;

/** The Supabase CLI, pinned in tools/package.json; its binary ships inside the npm package. */
export const SUPABASE_CLI = `${PROJECT_ROOT}tools/node_modules/.bin/supabase`;

/** Debian package -> a file that exists once it is installed. */
const DEBIAN_PACKAGES: Record<string, string> = {
  "postgresql-15": "/usr/lib/postgresql/15/bin/postgres",
  "postgresql-15-cron": "/usr/lib/postgresql/15/lib/pg_cron.so",
  "postgresql-15-pgtap": "/usr/share/postgresql/15/extension/pgtap.control",
  "postgresql-15-plpgsql-check": "/usr/share/postgresql/15/extension/plpgsql_check.control",
  "libtap-parser-sourcehandler-pgtap-perl": "/usr/bin/pg_prove",
  "redis-server": "/usr/bin/redis-server",
  "redis-tools": "/usr/bin/redis-cli",
  "postgresql-client-15": "/usr/bin/psql",
};

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

async function installDebianPackages(packages: string[]) {
  const asRoot = Deno.uid() === 0 ? [] : ["sudo", "--non-interactive"];
  const apt = (...args: string[]) => {
    const [command, ...rest] = [...asRoot, "apt-get", ...args];
    return run(command, rest, { env: { DEBIAN_FRONTEND: "noninteractive" } });
  };
  console.log(`installing Debian packages: ${packages.join(" ")}`);
  try {
    await apt("update", "-qq");
    await apt("install", "-y", "-qq", "--no-install-recommends", ...packages);
  } catch (error) {
    throw new Error(
      `could not install ${packages.join(", ")} (needs root or sudo): ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
}

export async function ensureDependencies() {
  const missing = Object.entries(DEBIAN_PACKAGES)
    .filter(([, marker]) => !exists(marker))
    .map(([name]) => name);
  if (missing.length > 0) await installDebianPackages(missing);
  if (!exists(SUPABASE_CLI)) {
    console.log("installing the Supabase CLI from npm into tools/");
    // `npm ci`: exactly what tools/package-lock.json records, which it never rewrites.
    await run("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], {
      cwd: `${PROJECT_ROOT}tools`,
    });
  }
}
