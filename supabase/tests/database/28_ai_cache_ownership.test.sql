-- Whose an AI-cache entry is (20261206000200): owned entries go with their owner's account,
-- shareable ones stay, and users cannot see either the entries or the shareable list.
begin;
create extension if not exists pgtap with schema extensions;

select plan(8);

insert into auth.users (id, email) values
  ('d0000000-0000-4000-8000-00000000000a', 'owner@example.test');

create temporary table k on commit drop as
select encode(extensions.digest('owned', 'sha256'), 'hex') as owned,
       encode(extensions.digest('shared', 'sha256'), 'hex') as shared,
       encode(extensions.digest('orphan', 'sha256'), 'hex') as orphan;
grant select on k to public;

select isnt(
  public.ai_cache_put((select owned from k), '{"answer":1}', 'm', 60,
                      'd0000000-0000-4000-8000-00000000000a'),
  null, 'an entry can be stored for its owner'
);
select isnt(
  public.ai_cache_put((select shared from k), '{"answer":2}', 'm', 60), null,
  'an entry without an owner is stored as shareable'
);
select is(
  public.ai_cache_put((select orphan from k), '{"answer":3}', 'm', 60,
                      'd0000000-0000-4000-8000-0000000000ff'),
  null, 'an entry for an account that no longer exists is not stored, and says so'
);

delete from auth.users where id = 'd0000000-0000-4000-8000-00000000000a';
select is(
  public.ai_cache_get((select owned from k)), null::jsonb,
  'deleting the account deletes the entries it owned'
);
select is(
  public.ai_cache_get((select shared from k)), '{"answer":2}'::jsonb,
  'shareable entries outlive any account'
);

insert into public.ai_shareable_analysis_types (analysis_type) values ('grammar');
select throws_ok(
  $$insert into public.ai_shareable_analysis_types (analysis_type) values (' padded ')$$,
  '23514', null, 'a shareable type is stored trimmed'
);

set local role authenticated;
select throws_ok(
  $$select * from public.ai_shareable_analysis_types$$, '42501', null,
  'a user cannot read which analysis types are shared'
);
reset role;
set local role anon;
select throws_ok(
  $$select * from public.ai_response_cache$$, '42501', null, 'anon cannot read the AI cache'
);
reset role;

select * from finish();
rollback;
