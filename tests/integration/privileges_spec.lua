-- Integration: database object ownership and privileges (issue 20, points 1
-- and 2, and the `migrate` bullets). A role that squats the engine's
-- schema or tables before ragops creates them (tests/hostile/sql/) is
-- refused with exit 2 and a pt-BR message naming the object and its owner,
-- and never becomes superuser; the trigger strategy's change capture works
-- for a role with only DML on the source; migrate's permission errors are
-- exit 2 and say which privilege is missing, and a current schema needs no
-- CREATE. The test server runs as the superuser postgres, which creates the
-- roles here.
local H = require "tests.integration.helper"

local SQUATTER, WRITER, LOWPRIV = "ragops_squatter", "ragops_escritor", "ragops_sem_create"
local DATABASES = { "ragops_it_priv_sync", "ragops_it_priv_migrate", "ragops_it_priv_public",
                    "ragops_it_priv_writer", "ragops_it_priv_nocreate", "ragops_it_priv_noop",
                    "ragops_it_priv_run" }

local function admin() return H.db_url("postgres") end

local function role_url(url, role)
  return (url:gsub("//([^@/]*)@", "//" .. role .. "@"))
end

-- Runs a file of tests/hostile/sql as `role` on url with psql variables.
local function run_fixture(url, role, file, vars)
  local flags = {}
  for k, v in pairs(vars or {}) do flags[#flags + 1] = ("-v %s=%s"):format(k, H.q(v)) end
  local code, _, err = H.sh(("psql -X -q -v ON_ERROR_STOP=1 %s -d %s -f %s"):format(table.concat(flags, " "),
    H.q(role_url(url, role)), H.q(H.source_dir .. "/tests/hostile/sql/" .. file)))
  assert(code == 0, "fixture " .. file .. " falhou: " .. err)
end

local function is_superuser(role)
  return H.scalar(admin(), ("select rolsuper::text from pg_roles where rolname = '%s'"):format(role))
end

local function drop_roles()
  for _, db in ipairs(DATABASES) do H.psql(admin(), "drop database if exists " .. db .. " with (force)") end
  for _, role in ipairs({ SQUATTER, WRITER, LOWPRIV }) do
    H.psql(admin(), "drop role if exists " .. role)
  end
end

local function plan_text()
  return [[
  local fortunes = source "fortune" { sql = "select id, text, updated_at from fortunes",
    key = "id", updated_at = "updated_at",
    document = function(r) return { content = r.text } end,
    sync = { strategy = "trigger", table = "fortunes" } }
  return plan { name = "priv", sources = { fortunes }, batch = { size = 64, in_flight = 2 },
    retry = { attempts = 3, base_ms = 20, max_ms = 200, timeout_s = 10 } }]]
end

describe("posse dos objetos e privilégios", function()
  local plan, real_config
  setup(function()
    drop_roles()
    H.psql(admin(), ("create role %s login; create role %s login; create role %s login")
      :format(SQUATTER, WRITER, LOWPRIV))
    plan = H.plan_file(plan_text())
    real_config = H.config_file('database = { storage = "real[]" }')
  end)
  teardown(function()
    os.remove(plan)
    os.remove(real_config)
    drop_roles()
  end)
  after_each(function() H.cleanup() end)

  local function migrated(name)
    local url = H.fresh_db(name)
    H.load_sources(url, 20, 30)
    local code, _, err = H.ragops(url, "migrate --config " .. H.q(real_config))
    assert.are.equal(0, code, err)
    return url
  end

  it("sync install recusa o esquema ragops_sync criado por outro papel, e ele não vira superusuário", function()
    local url = migrated("ragops_it_priv_sync")
    H.psql(url, ("grant create on database ragops_it_priv_sync to %s"):format(SQUATTER))
    run_fixture(url, SQUATTER, "squatter_sync.sql")
    local code, out, err = H.ragops(url, "sync install " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(2, code, out .. err)
    assert.matches('esquema ragops_sync pertence ao papel "' .. SQUATTER .. '"', err, 1, true)
    assert.matches("não adota", err)
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_trigger t join pg_class c on c.oid = t.tgrelid "
      .. "where c.relname = 'fortunes' and not t.tgisinternal"))
    -- the superuser writes the source, and again after the follower and uninstall were refused too
    H.psql(url, "update fortunes set text = text || ' editado' where id = 1")
    code, _, err = H.ragops(url, "sync " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(2, code, err)
    assert.matches(SQUATTER, err, 1, true)
    code, _, err = H.ragops(url, "sync uninstall " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(2, code, err)
    assert.matches(SQUATTER, err, 1, true)
    -- uninstall left the squatter's schema where it was (it is not ragops' to drop)
    assert.are.equal(1, H.scalar(url, "select count(*) from pg_namespace where nspname = 'ragops_sync'"))
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_trigger t join pg_class c on c.oid = t.tgrelid "
      .. "where c.relname = 'fortunes' and not t.tgisinternal"))
    assert.are.equal("false", is_superuser(SQUATTER))
  end)

  it("migrate recusa a tabela de versão que outro papel pôs no esquema \"$user\", e ele não vira superusuário", function()
    local url = H.fresh_db("ragops_it_priv_migrate")
    H.load_sources(url, 20, 30)
    H.psql(url, ("grant create on database ragops_it_priv_migrate to %s"):format(SQUATTER))
    local victim = H.scalar(url, "select current_user")
    run_fixture(url, SQUATTER, "squatter_migrate.sql", { victim = victim })
    local code, out, err = H.ragops(url, "migrate --config " .. H.q(real_config))
    assert.are.equal(2, code, out .. err)
    assert.matches(('a tabela %s.ragops_schema_version pertence ao papel "%s"'):format(victim, SQUATTER), err, 1, true)
    assert.matches("não adota", err)
    assert.are.equal("false", is_superuser(SQUATTER))
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_tables where tablename in ('ragops_runs', 'rag_documents')"))
    -- the schema alone (no table in it) is refused too: the new tables would be created there
    H.psql(url, ("drop table %s.ragops_schema_version"):format(victim))
    code, out, err = H.ragops(url, "migrate --config " .. H.q(real_config))
    assert.are.equal(2, code, out .. err)
    assert.matches(('o esquema %s, onde as tabelas do ragops seriam criadas, pertence ao papel "%s"')
      :format(victim, SQUATTER), err, 1, true)
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_tables where tablename in ('ragops_runs', 'rag_documents')"))
  end)

  it("migrate recusa ragops_runs criada por outro papel em public; nada é criado", function()
    local url = H.fresh_db("ragops_it_priv_public")
    H.psql(url, ("grant create on schema public to %s"):format(SQUATTER))
    H.psql(role_url(url, SQUATTER), "create table ragops_runs (id bigserial primary key, plan text not null)")
    local code, out, err = H.ragops(url, "migrate --config " .. H.q(real_config))
    assert.are.equal(2, code, out .. err)
    assert.matches(('a tabela public.ragops_runs pertence ao papel "%s"'):format(SQUATTER), err, 1, true)
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_tables where tablename in ('ragops_schema_version', 'rag_documents')"))
  end)

  it("run e sync recusam uma ragops_runs que outro papel pôs no esquema \"$user\" depois do migrate", function()
    local url = migrated("ragops_it_priv_run")
    H.psql(url, ("grant create on database ragops_it_priv_run to %s"):format(SQUATTER))
    local victim = H.scalar(url, "select current_user")
    H.psql(role_url(url, SQUATTER), ("create schema %s; create table %s.ragops_runs (id bigserial primary key, "
      .. "plan text not null)"):format(victim, victim))
    for _, args in ipairs({ "run " .. H.q(plan), "sync " .. H.q(plan) }) do
      local code, out, err = H.ragops(url, args .. " --config " .. H.q(real_config))
      assert.are.equal(2, code, args .. ": " .. out .. err)
      assert.matches(('a tabela %s.ragops_runs pertence ao papel "%s"'):format(victim, SQUATTER), err, 1, true)
    end
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents"))
  end)

  it("um papel só com DML na origem escreve e trunca depois do sync install, e a mudança chega ao índice", function()
    local url = migrated("ragops_it_priv_writer")
    local code, _, err = H.ragops(url, "run " .. H.q(plan) .. " --quiet --config " .. H.q(real_config))
    assert.are.equal(0, code, err)
    code, _, err = H.ragops(url, "sync install " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(0, code, err)
    H.psql(url, ("grant select, insert, update, delete, truncate on fortunes to %s"):format(WRITER))
    local writer = role_url(url, WRITER)
    H.psql(writer, "update fortunes set text = 'escrito por outro papel', updated_at = now() where id = 3")
    H.psql(writer, "delete from fortunes where id = 4")
    assert.are.equal(2, H.scalar(url, "select count(*) from ragops_sync.changes"))
    code, _, err = H.ragops(url, "sync " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(0, code, err)
    assert.are.equal("escrito por outro papel", H.scalar(url,
      "select content from rag_documents where entity_type = 'fortune' and entity_id = '3'"))
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune' and entity_id = '4'"))
    H.psql(writer, "truncate fortunes")
    code, _, err = H.ragops(url, "sync " .. H.q(plan) .. " --config " .. H.q(real_config))
    assert.are.equal(0, code, err)
    assert.are.equal(0, H.scalar(url, "select count(*) from rag_documents where entity_type = 'fortune'"))
    -- what install left: definer functions with a fixed search_path, nothing for PUBLIC, nothing for the writer
    local fns = H.psql(url, [[select p.prosecdef::text, array_to_string(p.proconfig, ','),
        coalesce((select bool_or(a.grantee = 0) from aclexplode(p.proacl) a), true)::text,
        pg_get_userbyid(p.proowner)
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'ragops_sync']])
    assert.are.equal(2, #fns) -- row trigger and TRUNCATE trigger of fortunes
    for _, f in ipairs(fns) do
      assert.are.same({ "true", "search_path=pg_catalog, pg_temp", "false", "postgres" }, f)
    end
    assert.are.equal("false", H.scalar(url, ("select has_schema_privilege('%s', 'ragops_sync', 'USAGE')::text"):format(WRITER)))
    assert.are.equal("false", H.scalar(url, "select coalesce(bool_or(a.grantee = 0), false)::text "
      .. "from pg_namespace n, aclexplode(n.nspacl) a where n.nspname = 'ragops_sync'"))
  end)

  it("migrate sem CREATE no esquema: código 2 dizendo qual privilégio falta; nada gravado", function()
    local url = H.fresh_db("ragops_it_priv_nocreate")
    local code, out, err = H.ragops(role_url(url, LOWPRIV), "migrate --config " .. H.q(real_config))
    assert.are.equal(2, code, out .. err)
    assert.matches("CREATE", err, 1, true)
    assert.matches(('GRANT CREATE ON SCHEMA "public" TO "%s";'):format(LOWPRIV), err, 1, true)
    assert.matches("permission denied", err, 1, true) -- PostgreSQL's own text, inside the pt-BR sentence
    assert.are.equal(0, H.scalar(url, "select count(*) from pg_tables where tablename like 'ragops%'"))
  end)

  it("migrate com o esquema já atualizado não precisa de CREATE: o papel das execuções roda como no-op", function()
    local url = migrated("ragops_it_priv_noop")
    -- what a role that runs plans has: DML on the engine's tables, no CREATE anywhere
    H.psql(url, ("grant select, insert, update, delete on all tables in schema public to %s"):format(LOWPRIV))
    local code, out, err = H.ragops(role_url(url, LOWPRIV), "migrate --config " .. H.q(real_config))
    assert.are.equal(0, code, out .. err)
    assert.matches("esquema já está atualizado", out)
  end)
end)
