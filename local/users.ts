import type postgres from "postgres";

/** Finds or creates a confirmed email user in `auth.users`, as signing up would. */
export async function ensureUser(sql: postgres.Sql, email: string): Promise<{ id: string }> {
  const [user] = await sql<{ id: string }[]>`
    with existing as (
      select id from auth.users where email = ${email}
    ), created as (
      insert into auth.users (aud, role, email, email_confirmed_at, raw_app_meta_data,
                              raw_user_meta_data)
      select 'authenticated', 'authenticated', ${email}, now(),
             '{"provider":"email","providers":["email"]}', '{}'
      where not exists (select 1 from existing)
      returning id
    )
    select id from existing union all select id from created`;
  return user;
}
