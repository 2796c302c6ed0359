-- Devices and notifications (20261206007100): a user reads and removes only their own devices,
-- and nobody but the service role sees the notification records; an account's deletion takes
-- its devices with it.
begin;
create extension if not exists pgtap with schema extensions;

select plan(9);

insert into auth.users (id, email) values
  ('d0000000-0000-4000-8000-00000000000a', 'dev-a@example.test'),
  ('d0000000-0000-4000-8000-00000000000b', 'dev-b@example.test');
insert into public.devices (user_id, expo_push_token, platform) values
  ('d0000000-0000-4000-8000-00000000000a', 'ExponentPushToken[a]', 'ios'),
  ('d0000000-0000-4000-8000-00000000000b', 'ExponentPushToken[b]', 'android');
insert into public.push_notifications (user_id, kind, subject)
values ('d0000000-0000-4000-8000-00000000000a', 'billing.payment_failed', 'evt_1');

set local role authenticated;
select set_config('request.jwt.claims', '{"sub":"d0000000-0000-4000-8000-00000000000a","role":"authenticated"}', true);

select results_eq($$select expo_push_token from public.devices$$, $$values ('ExponentPushToken[a]')$$,
  'a user reads only their own devices');
delete from public.devices where expo_push_token = 'ExponentPushToken[b]';
select throws_ok(
  $$insert into public.devices (user_id, expo_push_token, platform)
    values ('d0000000-0000-4000-8000-00000000000a', 'ExponentPushToken[c]', 'ios')$$,
  '42501', null, 'a user cannot register a device directly (only through the devices function)');
select throws_ok($$select * from public.push_notifications$$, '42501', null,
  'a user cannot read the notification records');

reset role;
select is((select count(*)::int from public.devices where expo_push_token = 'ExponentPushToken[b]'), 1,
  'another user''s device survives a delete attempt');
select throws_ok(
  $$insert into public.push_notifications (user_id, kind, subject)
    values ('d0000000-0000-4000-8000-00000000000a', 'billing.payment_failed', 'evt_1')$$,
  '23505', null, 'a (user, kind, subject) notification is recorded at most once');

delete from auth.users where id = 'd0000000-0000-4000-8000-00000000000a';
select is((select count(*)::int from public.devices where user_id = 'd0000000-0000-4000-8000-00000000000a'), 0,
  'deleting the account removes its devices');
select is((select count(*)::int from public.push_notifications where user_id = 'd0000000-0000-4000-8000-00000000000a'), 0,
  'and its notification records');

select public.enqueue_push_receipts() as receipts_job \gset
select is((select type from public.background_jobs where id = :receipts_job), 'notify.receipts',
  'the receipts tick queues a notify.receipts job');
select is(public.enqueue_push_receipts(), public.enqueue_push_receipts(),
  'two receipts ticks in the same minute queue one job');

select * from finish();
rollback;
