-- scripts/demo_data.sql: source tables of the demo (run by scripts/demo_data.sh).
-- Idempotent: only creates what does not exist yet.

set client_min_messages = warning;

create table if not exists verses (
  id         bigint primary key,   -- line number of `bible -f "Gen1:1-Rev22:21"` (1..31102)
  book       text not null,        -- abbreviation as printed by bible(1): Ge, Exo, SSol, 1Sa...
  chapter    int not null,
  verse      int not null,
  text       text not null,
  updated_at timestamptz not null  -- deterministic, spread over 2024 (see README)
);

create table if not exists fortunes (
  id         bigint primary key,   -- position of the non-empty record in fortunes-br's "brasil" file
  text       text not null,        -- record trimmed; internal line breaks kept
  updated_at timestamptz not null  -- same formula as verses
);

create index if not exists verses_updated_at_idx on verses (updated_at);
create index if not exists fortunes_updated_at_idx on fortunes (updated_at);
