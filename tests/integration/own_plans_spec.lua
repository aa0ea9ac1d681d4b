-- Integration (issue 22): one plan per corpus, every operation on it, with a
-- schema that is not the demo's (a Django-like app_article with soft
-- deletes and a related app_author; empty and NULL bodies; 20-50 KB texts)
-- and ONE plan file in a plans folder outside the repository (it imports a
-- sibling). From another working directory: backfill, reindex --entity-id,
-- failures retry, status, sync (install + one pass), model prepare +
-- backfill --target shadow; once naming the plan with --plan and once
-- through plans.default of the configuration (plans.dir relative to the
-- configuration file).
local H = require "tests.integration.helper"

local ROOT = os.tmpname()
os.remove(ROOT)

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- ROOT/app/ragops/planos/{artigos.lua, comum.lua}, ROOT/app/config/{por_flag,padrao}.lua, ROOT/outra (cwd).
local function layout()
  assert(H.sh(("mkdir -p %s/app/ragops/planos %s/app/config %s/outra"):format(ROOT, ROOT, ROOT)) == 0)
  write(ROOT .. "/app/ragops/planos/comum.lua", [[
-- comum.lua: o documento de um artigo (importado por artigos.lua).
return plan {
  name = "comum",
  run = function() end,
  description = "só para import",
}
]])
  write(ROOT .. "/app/ragops/planos/artigos.lua", [==[
-- artigos.lua: o plano do acervo de artigos (app_article + app_author).
local comum = import "comum.lua"
local artigo = source "article" {
  sql = [[select a.id, a.title, a.body, a.updated_at, au.name as author
            from app_article a join app_author au on au.id = a.author_id
           where a.deleted_at is null]],
  key = "id",
  updated_at = "updated_at",
  sync = { strategy = "trigger", table = "app_article", key_column = "id",
           related = { { table = "app_author", column = "id",
                         entities = "select id from app_article where author_id = $1" } } },
  document = function(row)
    if type(row.body) ~= "string" or row.body == "" then return nil end
    return { content = row.title .. "\n\n" .. row.body, metadata = { autor = row.author } }
  end,
}
return plan {
  name = "artigos",
  description = comum.description,
  sources = { artigo },
  batch = { size = 8, in_flight = 2 },
  chunking = { max_chars = 4000, overlap = 200 },
  operations = { failures_retry = { batch = { size = 3, in_flight = 1 } } },
}
]==])
  local base = [[database = { url = %q }, plans = { dir = "../ragops/planos"%s }]]
  write(ROOT .. "/app/config/por_flag.lua", "return { " .. base:format(H.base_url, "") .. " }\n")
  write(ROOT .. "/app/config/padrao.lua", "return { " .. base:format(H.base_url, ', default = "artigos"') .. " }\n")
end

-- The Django-like schema: 3 authors, 30 articles (5 empty, 6 NULL body, 10-12
-- of 20-50 KB, 7-8 carrying the marker the faulty provider rejects, 20
-- soft-deleted).
local function schema(url)
  H.psql(url, [[
    create table app_author (id serial primary key, name text not null,
                             updated_at timestamptz not null default now());
    create table app_article (id bigserial primary key, author_id int not null references app_author(id),
                              title text not null, body text, deleted_at timestamptz,
                              updated_at timestamptz not null default now());
    insert into app_author (name) values ('Ana'), ('Bruno'), ('Carla');
    insert into app_article (author_id, title, body)
    select 1 + i % 3, 'Artigo ' || i,
           case when i = 5 then '' when i = 6 then null
                when i between 10 and 12 then repeat('Parágrafo longo ' || i || ' sobre ' || md5(i::text) || '. ', 400 + i * 50)
                when i in (7, 8) then 'Texto MARCADOR-RUIM ' || md5(i::text)
                else 'Corpo do artigo ' || i || ' ' || md5(i::text) end
      from generate_series(1, 30) i;
    update app_article set deleted_at = now() where id = 20]])
end

-- ragops ARGS from ROOT/outra with the configuration `cfg` (por_flag|padrao).
local function ragops(url, cfg, args, opts)
  opts = opts or {}
  local report_path
  if opts.report then
    report_path = os.tmpname()
    args = args .. " --report-json " .. report_path
  end
  local code, out, err = H.sh(("cd %s/outra && env %s %s %s --config %s"):format(ROOT, H.env(url, opts.env),
    H.q(H.bin), args, H.q(ROOT .. "/app/config/" .. cfg .. ".lua")))
  local report
  if report_path then
    local text = H.read_all(report_path)
    os.remove(report_path)
    if text ~= "" then report = require("cjson").decode(text) end
  end
  return code, out, err, report
end

local function count(url, sql) return tonumber(H.scalar(url, sql)) end

local MODES = {
  { name = "--plan artigos", cfg = "por_flag", plan = " --plan artigos" },
  { name = "plans.default", cfg = "padrao", plan = "" },
}

describe("um plano por acervo (fora do repositório)", function()
  setup(layout)
  teardown(function() H.sh("rm -rf " .. H.q(ROOT)) end)
  after_each(function() H.cleanup() end)

  it("sem --plan nem plans.default, com dois arquivos na pasta, sai com 2 listando os planos", function()
    local url = H.fresh_db("ragops_it_own_plans_none")
    assert.are.equal(0, (ragops(url, "por_flag", "migrate")))
    local code, _, err = ragops(url, "por_flag", "backfill")
    assert.are.equal(2, code, err)
    assert.matches("nenhum plano escolhido", err, 1, true)
    assert.matches("(artigos, comum)", err, 1, true)
    code, _, err = ragops(url, "por_flag", "backfill --plan inexistente")
    assert.are.equal(2, code, err)
    assert.matches('plano "inexistente" não encontrado', err, 1, true)
    -- status still shows the rest and says the coverage needs a plan.
    local out
    code, out, err = ragops(url, "por_flag", "status")
    assert.are.equal(0, code, err)
    assert.matches("cobertura não medida: nenhum plano escolhido", out, 1, true)
    assert.matches("Falhas em aberto:", out, 1, true)
  end)

  for _, mode in ipairs(MODES) do
    it("backfill, reindex, failures retry, status, sync e a sombra via " .. mode.name, function()
      local url = H.fresh_db("ragops_it_own_plans_" .. mode.cfg)
      schema(url)
      assert.are.equal(0, (ragops(url, mode.cfg, "migrate")))
      local p = mode.plan

      -- backfill with a provider rejecting the marked articles: 2 dead letters.
      local faulty = H.start_embed_server("--reject-pattern MARCADOR-RUIM")
      local code, out, err, rep = ragops(url, mode.cfg, "backfill --quiet" .. p,
        { report = true, env = { RAGOPS_EMBED_URL = faulty.url } })
      H.stop_embed_server(faulty)
      assert.are.equal(1, code, out .. err)
      assert.are.equal("artigos", rep.plan)
      assert.are.equal(2, rep.failed)
      assert.are.equal(25, count(url, "select count(distinct entity_id) from rag_documents where entity_type = 'article'"))
      assert.are.equal(0, count(url, "select count(*) from rag_documents where entity_id in ('5', '6', '20')"))
      assert.is_true(count(url, "select count(*) from rag_documents where entity_id = '11'") > 5,
        "um texto de 20-50 KB vira vários trechos")

      -- failures retry: the same plan, scoped to the failing ids, in batches of 3.
      code, out, err, rep = ragops(url, mode.cfg, "failures retry --quiet" .. p, { report = true })
      assert.are.equal(0, code, out .. err)
      assert.are.equal(3, rep.limits.batch_size)
      assert.are.equal(1, rep.limits.in_flight)
      assert.are.equal(0, count(url, "select count(*) from ragops_failures where resolved_at is null"))
      assert.are.equal(27, count(url, "select count(distinct entity_id) from rag_documents"))

      -- reindex one entity, overwriting.
      code, out, err, rep = ragops(url, mode.cfg, "reindex --quiet --entity-type article --entity-id 3 --overwrite" .. p,
        { report = true })
      assert.are.equal(0, code, out .. err)
      assert.are.equal(1, rep.processed)
      assert.are.equal(1, rep.embedded)

      -- status: the coverage of the plan's source.
      code, out, err = ragops(url, mode.cfg, "status --json" .. p)
      assert.are.equal(0, code, err)
      local st = require("cjson").decode(out)
      assert.are.equal("artigos", st.plan)
      assert.are.same({ "article", 29, 27, 2 },
        { st.coverage[1].entity_type, st.coverage[1].source_rows, st.coverage[1].indexed, st.coverage[1].no_document })

      -- sync: triggers, then an edit, a soft delete and an author rename.
      code, out, err = ragops(url, mode.cfg, "sync install" .. p)
      assert.are.equal(0, code, out .. err)
      H.psql(url, [[update app_article set body = 'Texto novo do artigo 3', updated_at = now() where id = 3;
                    update app_article set deleted_at = now() where id = 4;
                    update app_author set name = 'Carla Dias' where id = 3]])
      code, out, err = ragops(url, mode.cfg, "sync --quiet" .. p)
      assert.are.equal(0, code, out .. err)
      assert.are.equal(1, count(url, [[select count(*) from rag_documents
                                        where entity_id = '3' and content like '%Texto novo do artigo 3%']]))
      assert.are.equal(0, count(url, "select count(*) from rag_documents where entity_id = '4'"))
      assert.are.equal(0, count(url, [[select count(*) from rag_documents d join app_article a on a.id::text = d.entity_id
                                        where a.author_id = 3 and a.deleted_at is null
                                          and d.metadata ->> 'autor' <> 'Carla Dias']]))

      -- model change: the shadow filled by the same plan.
      local server = H.start_embed_server("--dim 256")
      code, out, err = ragops(url, mode.cfg, ("model prepare --model ragops-hash-256 --dim 256 --set provider.url=%s")
        :format(server.url))
      assert.are.equal(0, code, out .. err)
      code, out, err = ragops(url, mode.cfg, "backfill --quiet --target shadow" .. p)
      H.stop_embed_server(server)
      assert.are.equal(0, code, out .. err)
      assert.are.equal(count(url, "select count(distinct entity_id) from rag_documents"),
        count(url, "select count(distinct entity_id) from rag_documents__shadow"))
    end)
  end
end)
