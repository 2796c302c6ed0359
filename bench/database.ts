import postgres from "postgres";
import { SECONDS } from "./support.ts";

/**
 * The database at scale: 1,000,000 `analyses` over 12 months and 100,000 users, then
 *   - "latest 20 for a user" through `analyses_page` (partitions touched, warm latency),
 *   - a concurrent refresh of `user_statistics` (and that readers are not blocked meanwhile),
 *   - dropping one old month (what `drop_expired_event_partitions` does),
 *   - `increment_usage_if_allowed` against the bare conditional `update`, one hot user and
 *     users spread out, with pgbench, plus a zero-over-grant check under concurrency.
 *
 * It runs against a live database (the local stack's, by default) and leaves it as it found it:
 * its users (and with them, by cascade, their profiles and rows), its plans and the partitions
 * it created are removed at the end, even when a step fails.
 *
 *   deno run -A bench/database.ts [db-url]    writes bench/results-database.md
 */

const USERS = 100_000;
const ROWS = 1_000_000;
const MONTHS = 12;
const PAGE_SAMPLES = 1_000;
const PGBENCH_CLIENTS = 8;
const PGBENCH_JOBS = 2;
/** A 10-s pgbench run per case and round; the rounds alternate bare and function runs. */
const PGBENCH_ROUNDS = 2;
const OVER_GRANT_QUOTA = 1_000;
const OVER_GRANT_ATTEMPTS = 1_600;

/** Bench users' ids: a fixed prefix nobody else uses, then the user number in hex. */
const ID_PREFIX = "be7c0000-0000-4000-8000-";
const idOf = (n: number) => `${ID_PREFIX}${n.toString(16).padStart(12, "0")}`;
const ID_SQL = (n: string) => `('${ID_PREFIX}' || lpad(to_hex(${n}), 12, '0'))::uuid`;
const EMAIL_LIKE = "bench-%@bench.invalid";
const BIG_PLAN = "bench_unlimited";
const TIGHT_PLAN = "bench_tight";
const BIG_QUOTA = 1_000_000_000;

const PGBENCH_CANDIDATES = ["/usr/lib/postgresql/15/bin/pgbench", "pgbench"];

const TARGET_INCREMENT_RATIO = 0.8;
const TARGET_PARTITIONS = 2;
const TARGET_PAGE_MS = 1;

interface PgbenchCase {
  name: string;
  bare: number[];
  increment: number[];
}

const median = (xs: number[]) => percentile(xs, 0.5);
function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[index];
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const ms = (from: number) => performance.now() - from;
const fmt = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

async function pgbenchPath(): Promise<string> {
  for (const candidate of PGBENCH_CANDIDATES) {
    try {
      const { success } = await new Deno.Command(candidate, { args: ["--version"], stdout: "null" })
        .output();
      if (success) return candidate;
    } catch {
      // try the next one
    }
  }
  throw new Error("pgbench not found (Debian: postgresql-client-15 / postgresql-15)");
}

async function pgbench(binary: string, dbUrl: string, script: string): Promise<number> {
  const file = await Deno.makeTempFile({ prefix: "bench-db-", suffix: ".sql" });
  try {
    await Deno.writeTextFile(file, script);
    const { success, stdout, stderr } = await new Deno.Command(binary, {
      args: [
        "--no-vacuum",
        "--client",
        String(PGBENCH_CLIENTS),
        "--jobs",
        String(PGBENCH_JOBS),
        "--time",
        String(SECONDS),
        "--file",
        file,
        dbUrl,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
    if (!success) throw new Error(`pgbench failed:\n${text}`);
    const failed = Number(text.match(/number of failed transactions: (\d+)/)?.[1] ?? 0);
    if (failed > 0) throw new Error(`pgbench: ${failed} failed transactions:\n${text}`);
    const tps = Number(text.match(/tps = ([\d.]+)/)?.[1]);
    if (!Number.isFinite(tps)) throw new Error(`pgbench: no tps in its output:\n${text}`);
    return tps;
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

/** Removes everything a (possibly interrupted) run may have left behind. */
async function cleanUp(sql: postgres.Sql, createdPartitions: string[]) {
  // Rows first with one set-based delete each, then the users (the cascade then finds nothing
  // left to delete, one index probe per partition and user).
  await sql.unsafe(`
    delete from public.analyses as a
     using auth.users as u
     where u.email like '${EMAIL_LIKE}' and a.user_id = u.id`);
  await sql.unsafe(`delete from auth.users where email like '${EMAIL_LIKE}'`);
  await sql.unsafe(`delete from public.plans where id in ('${BIG_PLAN}', '${TIGHT_PLAN}')`);
  // Only the partitions this run created, and only once they are empty again (a partition it
  // created may have received other rows meanwhile, or rows moved out of the default one).
  for (const name of createdPartitions) {
    const [{ present }] = await sql`
      select to_regclass('public.' || quote_ident(${name})) is not null as present`;
    if (!present) continue;
    const [{ rows }] = await sql.unsafe(`select count(*)::int as rows from public.${name}`);
    if (rows !== 0) continue;
    const table = name.replace(/_p\d{6}$/, "");
    await sql.begin(async (tx) => {
      await tx.unsafe(`lock table only public.${table} in access exclusive mode`);
      await tx.unsafe(`drop table public.${name}`);
    });
  }
  await sql`select public.refresh_user_statistics()`;
}

export async function databaseBench(dbUrl: string): Promise<string> {
  const pgbenchBinary = await pgbenchPath();
  const sql = postgres(dbUrl, {
    max: 1,
    prepare: false,
    onnotice: () => {},
    connection: { application_name: "bench-database" },
  });
  const createdPartitions: string[] = [];
  try {
    await cleanUp(sql, []);
    const log = (message: string) => console.error(`[database bench] ${message}`);

    // ----------------------------------------------------------------------------------------
    // Load
    // ----------------------------------------------------------------------------------------
    const loadStarted = performance.now();
    await sql.unsafe(`
      insert into public.plans (id, name, monthly_quota, ai_per_minute, general_per_minute, upload_per_minute)
      values ('${BIG_PLAN}', 'Bench (unlimited)', ${BIG_QUOTA}, 1000000, 1000000, 1000000),
             ('${TIGHT_PLAN}', 'Bench (tight)', ${OVER_GRANT_QUOTA}, 1000000, 1000000, 1000000)`);
    // Month m = 0 is the current UTC month, m = 11 eleven months back.
    const partitions = await sql.unsafe(`
      select table_name, partition_name, rows_moved
      from public.create_event_partitions_between(
        (date_trunc('month', now() at time zone 'UTC') - interval '${MONTHS - 1} months')::date,
        (now() at time zone 'UTC')::date)`);
    for (const p of partitions) createdPartitions.push(p.partition_name as string);
    log(`partitions created: ${partitions.length}`);

    const usersStarted = performance.now();
    await sql.unsafe(`
      insert into auth.users (id, aud, role, email, raw_app_meta_data, created_at, updated_at)
      select ${ID_SQL("g")}, 'authenticated', 'authenticated', 'bench-' || g || '@bench.invalid',
             '{"provider":"email","bench":true}', now() - interval '${MONTHS + 1} months', now()
      from generate_series(1, ${USERS}) as g`);
    // They signed up before the data starts, and are on a plan whose quota never binds.
    await sql.unsafe(`
      update public.profiles
         set plan_id = '${BIG_PLAN}',
             created_at = now() - interval '${MONTHS + 1} months',
             usage_count = 0,
             period_start = date_trunc('month', now(), 'UTC')
       where id in (select id from auth.users where email like '${EMAIL_LIKE}')`);
    const usersMs = ms(usersStarted);
    log(`${USERS} users in ${fmt(usersMs / 1000, 1)} s`);

    const rowsStarted = performance.now();
    // Spread uniformly over the 12 months (the current one up to now) and over the users.
    await sql.unsafe(`
      insert into public.analyses (user_id, created_at, analysis_type, input_kind, input_hash, result, model, cached)
      select ${ID_SQL("1 + (random() * " + (USERS - 1) + ")::int")},
             s.start + random() * (now() - s.start),
             (array['caption', 'label', 'describe'])[1 + g % 3],
             'text',
             md5(g::text) || md5((g + 1)::text),
             jsonb_build_object('summary', 'result ' || g, 'score', g % 100),
             'gpt-bench',
             g % 7 = 0
      from (select (date_trunc('month', now() at time zone 'UTC') - interval '${
      MONTHS - 1
    } months') at time zone 'UTC' as start) as s,
           generate_series(1, ${ROWS}) as g`);
    const rowsMs = ms(rowsStarted);
    log(`${ROWS} analyses in ${fmt(rowsMs / 1000, 1)} s`);
    await sql`analyze public.analyses`;
    await sql`analyze public.profiles`;
    const loadMs = ms(loadStarted);

    const [{ monthsWithRows, defaultRows }] = await sql.unsafe(`
      select count(distinct tableoid) filter (where tableoid <> 'public.analyses_default'::regclass)::int as "monthsWithRows",
             count(*) filter (where tableoid = 'public.analyses_default'::regclass)::int as "defaultRows"
      from public.analyses where user_id >= '${idOf(0)}' and user_id <= '${idOf(USERS)}'`);

    // ----------------------------------------------------------------------------------------
    // Latest 20 for a user
    // ----------------------------------------------------------------------------------------
    const sample = Array.from(
      { length: PAGE_SAMPLES },
      () => idOf(1 + Math.floor(Math.random() * USERS)),
    );
    // Warm: every user once (caches, and the session's cached generic plan), then measured.
    for (const id of sample) await sql`select * from public.analyses_page(${id}::uuid)`;
    const clientMs: number[] = [];
    let itemsReturned = 0;
    let shortPages = 0;
    for (const id of sample) {
      const started = performance.now();
      const [page] = await sql`select * from public.analyses_page(${id}::uuid)`;
      clientMs.push(ms(started));
      itemsReturned += (page.items as unknown[]).length;
      if ((page.items as unknown[]).length < 20 && page.has_more) shortPages++;
    }
    // The same calls timed inside the server, without the network and the client.
    await sql`
      create or replace function pg_temp.time_pages(p_ids uuid[]) returns setof double precision
      language plpgsql as $$
      declare
        v_id uuid;
        v_started timestamptz;
      begin
        foreach v_id in array p_ids loop
          v_started := clock_timestamp();
          perform * from public.analyses_page(v_id);
          return next extract(epoch from clock_timestamp() - v_started) * 1000;
        end loop;
      end
      $$`;
    const serverMs = (await sql`select * from pg_temp.time_pages(${sample}::uuid[]) as t(ms)`).map(
      (r) => Number(r.ms),
    );

    // One heavy-ish user (the one with most rows in the window): partitions in the EXPLAIN of
    // the page query, and scans of the real function counted by this transaction's statistics.
    const [{ user: explainUser }] = await sql.unsafe(`
      select user_id::text as user
      from public.analyses
      where user_id >= '${idOf(0)}' and user_id <= '${idOf(USERS)}'
        and created_at >= (date_trunc('month', now() at time zone 'UTC') - interval '1 month') at time zone 'UTC'
      group by user_id order by count(*) desc limit 1`);
    const explainQuery = `
      select * from public.analyses_in_window('${explainUser}',
        (date_trunc('month', now() at time zone 'UTC') - interval '1 month') at time zone 'UTC',
        (date_trunc('month', now() at time zone 'UTC') + interval '1 month') at time zone 'UTC' - interval '1 microsecond',
        (date_trunc('month', now() at time zone 'UTC') + interval '1 month') at time zone 'UTC',
        '00000000-0000-0000-0000-000000000000', 21)`;
    const [explained] = await sql.unsafe(
      `explain (analyze, costs off, timing off, format json) ${explainQuery}`,
    );
    const planNodes: Record<string, unknown>[] = [];
    const walk = (node: unknown) => {
      if (Array.isArray(node)) return node.forEach(walk);
      if (node && typeof node === "object") {
        const record = node as Record<string, unknown>;
        if ("Node Type" in record) planNodes.push(record);
        Object.values(record).forEach(walk);
      }
    };
    walk(explained["QUERY PLAN"]);
    const scanned = planNodes.filter((n) =>
      typeof n["Relation Name"] === "string" && Number(n["Actual Loops"]) > 0
    );
    const explainPartitions = new Set(scanned.map((n) => n["Relation Name"])).size;
    const explainNodes = [
      ...new Set(scanned.map((n) => `${n["Node Type"]} using ${n["Index Name"] ?? "-"}`)),
    ];
    const functionPartitions = await sql.begin(async (tx) => {
      const counts = () =>
        tx.unsafe(`
          select s.relid, coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0) as scans
          from pg_stat_xact_user_tables as s
          join pg_inherits as i on i.inhrelid = s.relid and i.inhparent = 'public.analyses'::regclass`);
      const before = new Map((await counts()).map((r) => [r.relid, Number(r.scans)]));
      await tx`select * from public.analyses_page(${explainUser}::uuid)`;
      const after = await counts();
      return after.filter((r) => Number(r.scans) > (before.get(r.relid) ?? 0)).length;
    });

    // ----------------------------------------------------------------------------------------
    // Concurrent refresh of user_statistics, with a reader meanwhile
    // ----------------------------------------------------------------------------------------
    const reader = postgres(dbUrl, { max: 1, prepare: false, onnotice: () => {} });
    let refreshMs: number;
    let refreshAgainMs: number;
    let readerMs = NaN;
    let readerFinishedFirst = false;
    try {
      await reader`select 1`;
      const refreshStarted = performance.now();
      let refreshDone = false;
      const refresh = sql`select public.refresh_user_statistics()`.then(() => {
        refreshDone = true;
        return ms(refreshStarted);
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (!refreshDone) {
        const readStarted = performance.now();
        await reader`select count(*) from public.user_statistics`;
        readerMs = ms(readStarted);
        readerFinishedFirst = !refreshDone;
      }
      refreshMs = await refresh;
      const again = performance.now();
      await sql`select public.refresh_user_statistics()`;
      refreshAgainMs = ms(again);
    } finally {
      await reader.end();
    }
    const [{ statsRows }] = await sql.unsafe(
      `select count(*)::int as "statsRows" from public.user_statistics where user_id >= '${
        idOf(0)
      }' and user_id <= '${idOf(USERS)}'`,
    );

    // ----------------------------------------------------------------------------------------
    // Dropping an old month: the oldest month this run created (so only bench rows are in it)
    // ----------------------------------------------------------------------------------------
    const oldest = `analyses_p${
      new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() - (MONTHS - 1), 1))
        .toISOString().slice(0, 7).replace("-", "")
    }`;
    let dropMs = NaN;
    let droppedRows = 0;
    if (createdPartitions.includes(oldest)) {
      [{ rows: droppedRows }] = await sql.unsafe(
        `select count(*)::int as rows from public.${oldest}`,
      );
      const started = performance.now();
      await sql.begin(async (tx) => {
        await tx.unsafe(`lock table only public.analyses in access exclusive mode`);
        await tx.unsafe(`drop table public.${oldest}`);
      });
      dropMs = ms(started);
    }

    // ----------------------------------------------------------------------------------------
    // increment_usage_if_allowed against the bare conditional update, with pgbench
    // ----------------------------------------------------------------------------------------
    const hot = `'${idOf(1)}'::uuid`;
    const spread = `${ID_SQL(":n")}`;
    const scripts = {
      hotBare: `update public.profiles set usage_count = usage_count + 1
 where id = ${hot} and usage_count + 1 <= ${BIG_QUOTA};
`,
      hotIncrement: `select allowed from public.increment_usage_if_allowed(${hot}, 1);
`,
      spreadBare: `\\set n random(1, ${USERS})
update public.profiles set usage_count = usage_count + 1
 where id = ${spread} and usage_count + 1 <= ${BIG_QUOTA};
`,
      spreadIncrement: `\\set n random(1, ${USERS})
select allowed from public.increment_usage_if_allowed(${spread}, 1);
`,
    };
    const cases: PgbenchCase[] = [
      { name: "one hot user", bare: [], increment: [] },
      { name: `users spread out (${USERS.toLocaleString("en")})`, bare: [], increment: [] },
    ];
    for (let round = 0; round < PGBENCH_ROUNDS; round++) {
      log(`pgbench round ${round + 1}/${PGBENCH_ROUNDS}`);
      // Alternate which goes first, so drift over the run favours neither.
      const pairs: [PgbenchCase, string, string][] = [
        [cases[0], scripts.hotBare, scripts.hotIncrement],
        [cases[1], scripts.spreadBare, scripts.spreadIncrement],
      ];
      for (const [c, bare, increment] of pairs) {
        if (round % 2 === 0) {
          c.bare.push(await pgbench(pgbenchBinary, dbUrl, bare));
          c.increment.push(await pgbench(pgbenchBinary, dbUrl, increment));
        } else {
          c.increment.push(await pgbench(pgbenchBinary, dbUrl, increment));
          c.bare.push(await pgbench(pgbenchBinary, dbUrl, bare));
        }
      }
    }

    // Zero over-grant: OVER_GRANT_ATTEMPTS concurrent increments of one user whose quota is
    // OVER_GRANT_QUOTA, over PGBENCH_CLIENTS connections.
    const tightUser = idOf(2);
    await sql.unsafe(
      `update public.profiles set plan_id = '${TIGHT_PLAN}', usage_count = 0 where id = '${tightUser}'`,
    );
    const hammer = postgres(dbUrl, { max: PGBENCH_CLIENTS, prepare: false, onnotice: () => {} });
    let granted = 0;
    let maxUsed = 0;
    try {
      const results = await Promise.all(
        Array.from(
          { length: OVER_GRANT_ATTEMPTS },
          () =>
            hammer`select allowed, used from public.increment_usage_if_allowed(${tightUser}::uuid, 1)`,
        ),
      );
      for (const [r] of results) {
        if (r.allowed) granted++;
        maxUsed = Math.max(maxUsed, Number(r.used));
      }
    } finally {
      await hammer.end();
    }
    const [{ tightUsage }] = await sql.unsafe(
      `select usage_count as "tightUsage" from public.profiles where id = '${tightUser}'`,
    );
    const [{ overQuota }] = await sql.unsafe(`
      select count(*)::int as "overQuota"
      from public.profiles as p join public.plans as pl on pl.id = p.plan_id
      where p.id in (select id from auth.users where email like '${EMAIL_LIKE}')
        and p.usage_count > pl.monthly_quota`);
    const overGrantOk = granted === OVER_GRANT_QUOTA && Number(tightUsage) === OVER_GRANT_QUOTA &&
      maxUsed <= OVER_GRANT_QUOTA && Number(overQuota) === 0;

    // ----------------------------------------------------------------------------------------
    // Report
    // ----------------------------------------------------------------------------------------
    const serverMedian = median(serverMs);
    const serverP99 = percentile(serverMs, 0.99);
    const clientMedian = median(clientMs);
    const clientP99 = percentile(clientMs, 0.99);
    const ratios = cases.map((c) => mean(c.increment) / mean(c.bare));
    const partitionsOk = explainPartitions <= TARGET_PARTITIONS &&
      functionPartitions <= TARGET_PARTITIONS;
    const pgbenchRow = (c: PgbenchCase, ratio: number) =>
      `| ${c.name} | ${fmt(mean(c.bare), 0)} | ${fmt(mean(c.increment), 0)} | ${
        fmt(ratio * 100, 1)
      } % | ${c.bare.map((x) => fmt(x, 0)).join(" / ")} | ${
        c.increment.map((x) => fmt(x, 0)).join(" / ")
      } |`;

    return [
      "## Database: partitioned history, statistics, retention and usage metering at scale",
      "",
      `${ROWS.toLocaleString("en")} \`analyses\` rows over ${MONTHS} monthly partitions (` +
      `${monthsWithRows} months with rows, ${defaultRows} rows in the default partition) and ` +
      `${USERS.toLocaleString("en")} users, loaded with \`insert ... select generate_series\` ` +
      `(users ${fmt(usersMs / 1000, 1)} s, rows ${fmt(rowsMs / 1000, 1)} s, ` +
      `${fmt(loadMs / 1000, 1)} s with \`analyze\`), then removed again.`,
      "",
      "### Latest 20 for a user (`analyses_page`, first page, warm)",
      "",
      `${PAGE_SAMPLES.toLocaleString("en")} random users, each called once to warm up and ` +
      `then timed; on average ${fmt(itemsReturned / PAGE_SAMPLES, 1)} items per page ` +
      `(${shortPages} pages came back short with \`has_more\`, as the contract allows: ` +
      `users have ~${ROWS / USERS} rows over ${MONTHS} months).`,
      "",
      "| measured | median ms | p99 ms |",
      "| --- | ---: | ---: |",
      `| inside the server (PL/pgSQL loop, \`clock_timestamp()\`) | ${fmt(serverMedian, 3)} | ${
        fmt(serverP99, 3)
      } |`,
      `| round trip from postgres.js (\`prepare: false\`, loopback) | ${fmt(clientMedian, 3)} | ${
        fmt(clientP99, 3)
      } |`,
      "",
      `For the user with the most rows in the window (\`${explainUser}\`): EXPLAIN ANALYZE of ` +
      `the page query reads ${explainPartitions} partition(s) (${explainNodes.join(", ")}); ` +
      `the real \`analyses_page\` call scanned ${functionPartitions} partition(s) ` +
      `(\`pg_stat_xact_user_tables\`).`,
      "",
      "### Materialized view refresh and retention",
      "",
      "| operation | ms |",
      "| --- | ---: |",
      `| \`refresh materialized view concurrently user_statistics\` after the load (${statsRows} bench rows) | ${
        fmt(refreshMs, 0)
      } |`,
      `| the same again, nothing changed (the hourly steady state) | ${fmt(refreshAgainMs, 0)} |`,
      `| a \`select count(*)\` on the view during the refresh | ${
        Number.isFinite(readerMs)
          ? `${fmt(readerMs, 1)} (${
            readerFinishedFirst ? "finished before the refresh did: not blocked" : "blocked?"
          })`
          : "n/a (the refresh finished within 200 ms)"
      } |`,
      `| drop one old month (\`${oldest}\`, ${
        droppedRows.toLocaleString("en")
      } rows: lock + \`drop table\`) | ${
        Number.isFinite(dropMs) ? fmt(dropMs, 1) : "n/a (partition not created by this run)"
      } |`,
      "",
      "### `increment_usage_if_allowed` against the bare conditional `update` (pgbench)",
      "",
      `pgbench \`-c ${PGBENCH_CLIENTS} -j ${PGBENCH_JOBS} -T ${SECONDS}\`, simple protocol, ` +
      `${PGBENCH_ROUNDS} alternating rounds per case (mean shown); the bare update is ` +
      `\`update profiles set usage_count = usage_count + 1 where id = $1 and usage_count + 1 <= ` +
      `${BIG_QUOTA}\`.`,
      "",
      "| users | bare update tps | increment tps | increment / bare | bare runs | increment runs |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      pgbenchRow(cases[0], ratios[0]),
      pgbenchRow(cases[1], ratios[1]),
      "",
      `Over-grant check: ${OVER_GRANT_ATTEMPTS} concurrent increments (${PGBENCH_CLIENTS} ` +
      `connections) for one user with a quota of ${OVER_GRANT_QUOTA}: ${granted} granted, ` +
      `final usage ${tightUsage}, highest \`used\` returned ${maxUsed}; ` +
      `${overQuota} bench profiles over quota after all runs.`,
      "",
      "| target | measured | verdict |",
      "| --- | --- | --- |",
      `| increment >= ${TARGET_INCREMENT_RATIO * 100} % of the bare update, hot user | ${
        fmt(ratios[0] * 100, 1)
      } % | ${verdict(ratios[0] >= TARGET_INCREMENT_RATIO)} |`,
      `| increment >= ${TARGET_INCREMENT_RATIO * 100} % of the bare update, spread users | ${
        fmt(ratios[1] * 100, 1)
      } % | ${verdict(ratios[1] >= TARGET_INCREMENT_RATIO)} |`,
      `| latest 20 touches <= ${TARGET_PARTITIONS} partitions | EXPLAIN ${explainPartitions}, call ${functionPartitions} | ${
        verdict(partitionsOk)
      } |`,
      `| latest 20 < ${TARGET_PAGE_MS} ms warm (median, in the server) | ${
        fmt(serverMedian, 3)
      } ms (p99 ${fmt(serverP99, 3)}) | ${verdict(serverMedian < TARGET_PAGE_MS)} |`,
      `| latest 20 < ${TARGET_PAGE_MS} ms warm (median, round trip) | ${
        fmt(clientMedian, 3)
      } ms (p99 ${fmt(clientP99, 3)}) | ${verdict(clientMedian < TARGET_PAGE_MS)} |`,
      `| zero over-grant | ${granted} of ${OVER_GRANT_QUOTA} granted, ${overQuota} over quota | ${
        verdict(overGrantOk)
      } |`,
    ].join("\n");
  } finally {
    try {
      await cleanUp(sql, createdPartitions);
    } finally {
      await sql.end();
    }
  }
}

if (import.meta.main) {
  const { LOCAL_DB_URL } = await import("../local/keys.ts");
  const dbUrl = Deno.args[0] ?? Deno.env.get("SUPABASE_DB_URL") ?? LOCAL_DB_URL;
  const section = await databaseBench(dbUrl);
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
    /model name\s*:\s*(.+)/,
  )?.[1];
  const memory = Math.round(Deno.systemMemoryInfo().total / 1024 ** 3);
  const version = await (async () => {
    const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
    try {
      const [{ server_version }] = await sql`show server_version`;
      return String(server_version);
    } finally {
      await sql.end();
    }
  })();
  const file = new URL("./results-database.md", import.meta.url).pathname;
  await Deno.writeTextFile(
    file,
    [
      "# Database benchmark",
      "",
      `- Date: ${new Date().toISOString()}`,
      `- Machine: ${navigator.hardwareConcurrency} cores (${cpu ?? "unknown CPU"}), ${memory} GiB`,
      `- Deno ${Deno.version.deno}, PostgreSQL ${version}, client and server on the same machine`,
      "",
      section,
      "",
    ].join("\n"),
  );
  // Keep the file as `deno fmt` would write it (aligned tables), so a fmt check stays green.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", file], stderr: "null" })
    .output()
    .catch(() => {});
  console.log(section);
  console.log(`\nwritten to ${file}`);
}
