-- Quiet hours (20261206007100): the settings accept {start, end, timezone} and nothing else
-- there, and quiet_hours_end says when a window that holds a moment ends, across midnight too.
begin;
create extension if not exists pgtap with schema extensions;

select plan(7);

select ok(public.profile_settings_are_valid(
  '{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"Europe/Berlin"},"timezone":"Europe/Berlin"}'),
  'quiet hours and a time zone are valid settings');
select ok(not public.profile_settings_are_valid('{"quiet_hours":{"start":"22:00","end":"07:00"}}'),
  'quiet hours need a time zone');
select ok(not public.profile_settings_are_valid(
  '{"quiet_hours":{"start":"25:00","end":"07:00","timezone":"UTC"}}'), 'an hour past 23 is refused');
select ok(not public.profile_settings_are_valid(
  '{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"UTC","loud":true}}'), 'an unknown key is refused');
select is(public.quiet_hours_end('{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"UTC"}}',
                                 '2026-01-01 23:30Z'), '2026-01-02 07:00Z'::timestamptz,
  'a window over midnight ends the next morning');
select is(public.quiet_hours_end('{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"Europe/Berlin"}}',
                                 '2026-01-01 12:00Z'), null, 'outside the window there is no end');
select is(public.quiet_hours_end('{"quiet_hours":{"start":"22:00","end":"07:00","timezone":"Europe/Berlin"}}',
                                 '2026-01-01 05:30Z'), '2026-01-01 06:00Z'::timestamptz,
  'the window is read in its own time zone');

select * from finish();
rollback;
