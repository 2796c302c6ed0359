-- Event tables: the append-mostly history the app produces (AI results, chat messages, the
-- user's activity log) and one row per API request for operators. Each grows without bound, so
-- each is RANGE-partitioned by month on created_at:
--   * retention is a `drop table` of a whole month (20261123000410), never a bulk delete;
--   * "latest N of a user" reads one or two recent months (20261123000420), not the whole history.
--
-- Layout, for every table here:
--   * partitions are named <table>_pYYYYMM and cover one calendar month in UTC; they are made
--     by public.create_event_partitions() (20261123000410), a few months ahead, daily by pg_cron;
--   * <table>_default catches any row no monthly partition covers (far future, or a month whose
--     partition does not exist yet), so an insert never fails for want of a partition. It should
--     stay empty; create_event_partitions_between() moves rows out of it when it makes the month;
--   * the primary key is (id, created_at): a unique constraint on a partitioned table must
--     include the partition key. id alone is still unique in practice (random uuid / identity).
--
-- Access model (hosted Supabase conventions):
--   * analyses, chat_messages, activities: a signed-in user reads only their own rows (RLS on the
--     parent). Nobody but service_role writes: the edge functions record these rows themselves.
--   * api_metrics: service_role only.
--   * anon: nothing.
--   * Partitions: row level security is checked on the table a query NAMES. A query through the
--     parent gets the parent's policies (for every partition it reads); a query that names a
--     partition directly gets the partition's own (none). Hosted Supabase's default privileges
--     would grant every new partition to anon and authenticated, which would let them read
--     partitions directly, past the parent's policies. So every partition has all privileges
--     revoked from the API roles and RLS enabled with no policy (deny-all, belt and braces);
--     create_event_partitions_between() does the same for every partition it makes.
--
-- Re-runnable: every statement is idempotent.

-- -------------------------------------------------------------------------------------------
-- analyses: AI results
-- -------------------------------------------------------------------------------------------
create table if not exists public.analyses (
  id            uuid        not null default gen_random_uuid(),
  user_id       uuid        not null references auth.users (id) on delete cascade,
  created_at    timestamptz not null default now(),
  analysis_type text        not null
                            constraint analyses_analysis_type_length check (pg_catalog.char_length(analysis_type) between 1 and 64),
  input_kind    text        constraint analyses_input_kind_valid check (input_kind in ('text', 'image_url', 'image_base64')),
  input_hash    text        constraint analyses_input_hash_sha256_hex check (input_hash ~ '^[0-9a-f]{64}$'),
  result        jsonb       not null,
  model         text,
  cached        boolean     not null default false,
  constraint analyses_pkey primary key (id, created_at)
) partition by range (created_at);
comment on table public.analyses is
  'AI analysis results, one row per analysis. Partitioned by month (UTC) on created_at; see public.event_retention. '
  'Users read their own rows; only service_role writes.';
comment on column public.analyses.input_hash is
  'SHA-256 of the analysed input, lowercase hex (64 characters); the input itself is not stored.';
comment on column public.analyses.cached is 'True when the result came from public.ai_response_cache.';

-- -------------------------------------------------------------------------------------------
-- chat_messages
-- -------------------------------------------------------------------------------------------
create table if not exists public.chat_messages (
  id              uuid        not null default gen_random_uuid(),
  user_id         uuid        not null references auth.users (id) on delete cascade,
  conversation_id uuid        not null,
  role            text        not null constraint chat_messages_role_valid check (role in ('user', 'assistant')),
  content         text        not null,
  model           text,
  created_at      timestamptz not null default now(),
  constraint chat_messages_pkey primary key (id, created_at)
) partition by range (created_at);
comment on table public.chat_messages is
  'Chat messages (the user''s and the assistant''s). Partitioned by month (UTC) on created_at; see public.event_retention. '
  'Users read their own rows; only service_role writes.';
comment on column public.chat_messages.conversation_id is
  'Groups the messages of one conversation; chosen by the app (there is no conversations table).';

-- -------------------------------------------------------------------------------------------
-- activities: the user's activity log
-- -------------------------------------------------------------------------------------------
create table if not exists public.activities (
  id         uuid        not null default gen_random_uuid(),
  user_id    uuid        not null references auth.users (id) on delete cascade,
  kind       text        not null constraint activities_kind_length check (pg_catalog.char_length(kind) between 1 and 64),
  detail     jsonb       not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  constraint activities_pkey primary key (id, created_at)
) partition by range (created_at);
comment on table public.activities is
  'User activity log (sign-in, analysis, purchase, ...). Partitioned by month (UTC) on created_at; see public.event_retention. '
  'Users read their own rows; only service_role writes.';

-- -------------------------------------------------------------------------------------------
-- api_metrics: one row per API request
-- -------------------------------------------------------------------------------------------
create table if not exists public.api_metrics (
  id            bigint      generated always as identity,
  created_at    timestamptz not null default now(),
  function_name text        not null,
  method        text        not null,
  status        integer     not null constraint api_metrics_status_valid check (status between 100 and 599),
  duration_ms   real        not null constraint api_metrics_duration_non_negative check (duration_ms >= 0),
  -- Deliberately NOT a foreign key to auth.users: metrics outlive accounts (deleting a user must
  -- not delete or rewrite the request history operators aggregate), and a foreign key would add
  -- a lookup in auth.users to every request's insert. The id of a deleted user is just an
  -- opaque uuid; the rows go with their month after 90 days (public.event_retention).
  user_id       uuid,
  request_id    text,
  constraint api_metrics_pkey primary key (id, created_at)
) partition by range (created_at);
comment on table public.api_metrics is
  'One row per API request (function, method, status, duration). Partitioned by month (UTC) on created_at; '
  'see public.event_retention. service_role only.';
comment on column public.api_metrics.user_id is
  'The caller, if signed in. No foreign key on purpose: metrics outlive accounts (retention drops them by month).';

-- -------------------------------------------------------------------------------------------
-- Default partitions: an insert never fails for want of a monthly partition
-- -------------------------------------------------------------------------------------------
create table if not exists public.analyses_default      partition of public.analyses      default;
create table if not exists public.chat_messages_default partition of public.chat_messages default;
create table if not exists public.activities_default    partition of public.activities    default;
create table if not exists public.api_metrics_default   partition of public.api_metrics   default;

-- -------------------------------------------------------------------------------------------
-- Indexes (partitioned: defined once on the parent, made on every partition, now and later)
-- -------------------------------------------------------------------------------------------
-- "The user's latest N": the key is (user_id, created_at desc), with id as the tie-breaker of the
-- page order (created_at desc, id desc), so a page is read straight off the index, no sort.
-- They also serve the ON DELETE CASCADE from auth.users (find a user's rows in every month).
create index if not exists analyses_user_id_created_at_idx
  on public.analyses (user_id, created_at desc, id desc);
create index if not exists chat_messages_user_id_created_at_idx
  on public.chat_messages (user_id, created_at desc, id desc);
create index if not exists activities_user_id_created_at_idx
  on public.activities (user_id, created_at desc, id desc);
-- One conversation's messages in order.
create index if not exists chat_messages_conversation_id_created_at_idx
  on public.chat_messages (conversation_id, created_at desc, id desc);
-- api_metrics: a user's requests (support), a function's requests over time (per-function
-- latency and error rates) and all requests over time (dashboards). The rows arrive in
-- created_at order, so BRIN (a few pages per partition) serves the time ranges instead of a
-- B-tree that every request would have to update.
create index if not exists api_metrics_user_id_created_at_idx
  on public.api_metrics (user_id, created_at desc) where user_id is not null;
create index if not exists api_metrics_function_name_created_at_idx
  on public.api_metrics (function_name, created_at);
create index if not exists api_metrics_created_at_idx
  on public.api_metrics using brin (created_at);

-- -------------------------------------------------------------------------------------------
-- Row level security
-- -------------------------------------------------------------------------------------------
alter table public.analyses      enable row level security;
alter table public.chat_messages enable row level security;
alter table public.activities    enable row level security;
alter table public.api_metrics   enable row level security;

drop policy if exists "Users can read their own analyses" on public.analyses;
create policy "Users can read their own analyses"
  on public.analyses
  for select
  to authenticated
  using ((select auth.uid()) = user_id);

drop policy if exists "Users can read their own chat messages" on public.chat_messages;
create policy "Users can read their own chat messages"
  on public.chat_messages
  for select
  to authenticated
  using ((select auth.uid()) = user_id);

drop policy if exists "Users can read their own activities" on public.activities;
create policy "Users can read their own activities"
  on public.activities
  for select
  to authenticated
  using ((select auth.uid()) = user_id);

-- api_metrics: no policy at all. service_role bypasses RLS; everyone else gets no rows (and,
-- below, no privileges).

-- -------------------------------------------------------------------------------------------
-- Privileges
-- -------------------------------------------------------------------------------------------
-- Default privileges gave the API roles everything, TRUNCATE included (which RLS does not
-- govern). Narrow them: users may only SELECT (RLS picks their rows); service_role writes.
revoke all on table public.analyses, public.chat_messages, public.activities, public.api_metrics
  from anon, authenticated, service_role;
grant select on table public.analyses, public.chat_messages, public.activities to authenticated;
grant select, insert, update, delete on table public.analyses, public.chat_messages, public.activities
  to service_role;
grant select, insert, delete on table public.api_metrics to service_role;
-- The identity sequence: nextval for an identity column needs no privilege on it.
revoke all on sequence public.api_metrics_id_seq from anon, authenticated, service_role;

-- The default partitions, like every partition: no direct access for the API roles, and RLS
-- with no policy in case a privilege is ever granted by mistake. Reads and writes go through
-- the parent, whose policies apply.
revoke all on table public.analyses_default, public.chat_messages_default, public.activities_default,
  public.api_metrics_default
  from anon, authenticated, service_role;
alter table public.analyses_default      enable row level security;
alter table public.chat_messages_default enable row level security;
alter table public.activities_default    enable row level security;
alter table public.api_metrics_default   enable row level security;
