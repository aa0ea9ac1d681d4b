-- index_spec.lua: ragops.vector.index without a database: flag validation (pgvector
-- limits, pt-BR errors), SQL generation for both methods, every opclass,
-- CONCURRENTLY, --alter-dim and maintenance_work_mem; storage diagnostics
-- (real[] / missing extension); the defaults in plans/create_index.lua.
require "tests.lua.c_stubs"

local index = require "ragops.vector.index"

-- ragops.pg is a C module; its quote_ident always double-quotes and doubles
-- embedded quotes. The same rule, in Lua, for these specs.
index.quote_ident = function(name) return '"' .. name:gsub('"', '""') .. '"' end

local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/[^/]*$") or "."
local PLAN = here .. "/../../../plans/create_index.lua"

local function create(opts, defaults)
  return index.validate_create(opts, defaults or {}, "rag_documents")
end

local function sql_of(opts, column_type)
  local spec = assert(create(opts))
  return index.create_sql(spec, "rag_documents", column_type or "vector(" .. spec.dim .. ")")
end

describe("plans/create_index.lua", function()
  it("declara os padrões do runbook: ivfflat cosseno, 64/2000 listas, probes 10", function()
    local d = assert(index.load_defaults(PLAN))
    assert.are.equal("ivfflat", d.method)
    assert.are.equal("cosine", d.opclass)
    assert.are.same({ dev = 64, prod = 2000 }, d.lists)
    assert.are.equal(10, d.probes)
    assert.are.same({ 10, 20 }, d.probes_range)
    assert.are.same({ dev = "2GB", prod = "4GB" }, d.maintenance_work_mem)
    -- The plan's values pass the same validation as the flags.
    assert.is_truthy(create({ dim = "1536", lists = tostring(d.lists.prod) }, d))
    assert.is_truthy(index.parse_memory(d.maintenance_work_mem.prod))
    assert.is_truthy(create({ dim = "1536", method = "hnsw", m = tostring(d.m),
                              ["ef-construction"] = tostring(d.ef_construction) }, d))
  end)

  it("um plano que não devolve tabela é recusado com mensagem em pt-BR", function()
    local path = os.tmpname() .. ".lua"
    local f = assert(io.open(path, "w"))
    f:write('return plan { name = "x", run = function() return 42 end }')
    f:close()
    local d, err = index.load_defaults(path)
    os.remove(path)
    assert.is_nil(d)
    assert.matches("deve devolver uma tabela", err)
  end)
end)

describe("SQL de criação", function()
  it("ivfflat com cosseno é o padrão, com o nome padrão e lists", function()
    local sql = sql_of({ dim = "1536", lists = "2000" })
    assert.are.same({
      'CREATE INDEX "rag_documents_embedding_ivfflat" ON "rag_documents" USING ivfflat '
        .. '("embedding" vector_cosine_ops) WITH (lists = 2000)',
    }, sql.statements)
    assert.is_nil(sql.alter)
  end)

  it("hnsw com m e ef_construction, padrões 16/64", function()
    local sql = sql_of({ dim = "1536", method = "hnsw" })
    assert.are.equal('CREATE INDEX "rag_documents_embedding_hnsw" ON "rag_documents" USING hnsw '
      .. '("embedding" vector_cosine_ops) WITH (m = 16, ef_construction = 64)', sql.create)
    sql = sql_of({ dim = "768", method = "hnsw", m = "32", ["ef-construction"] = "200", opclass = "ip" })
    assert.matches("USING hnsw %(\"embedding\" vector_ip_ops%) WITH %(m = 32, ef_construction = 200%)$", sql.create)
  end)

  it("cada opclass vira a classe de operadores do pgvector", function()
    for short, full in pairs({ cosine = "vector_cosine_ops", l2 = "vector_l2_ops", ip = "vector_ip_ops" }) do
      for _, method in ipairs({ "ivfflat", "hnsw" }) do
        local opts = { dim = "1536", opclass = short, method = method }
        if method == "ivfflat" then opts.lists = "64" end
        local sql = sql_of(opts)
        assert.matches("USING " .. method .. " %(\"embedding\" " .. full .. "%)", sql.create)
      end
    end
  end)

  it("--concurrently, --name e maintenance_work_mem em comandos separados (fora de transação)", function()
    local sql = sql_of({ dim = "1536", lists = "64", concurrently = true, name = 'idx "x"',
                         ["maintenance-work-mem"] = "4gb" })
    assert.are.same({
      "SET maintenance_work_mem = '4GB'",
      'CREATE INDEX CONCURRENTLY "idx ""x""" ON "rag_documents" USING ivfflat ("embedding" vector_cosine_ops) '
        .. "WITH (lists = 64)",
      "RESET maintenance_work_mem",
    }, sql.statements)
    for _, stmt in ipairs(sql.statements) do
      assert.is_nil(stmt:find(";", 1, true), "um comando por envio: " .. stmt)
      assert.is_nil(stmt:upper():find("BEGIN", 1, true))
    end
  end)

  it("--alter-dim converte real[] e vector(N) diferente, e não mexe em vector(dim)", function()
    local alter = 'ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE vector(1536) '
      .. 'USING "embedding"::vector(1536)'
    local sql = sql_of({ dim = "1536", lists = "64", ["alter-dim"] = true }, "real[]")
    assert.are.equal(alter, sql.alter)
    assert.are.equal(alter, sql.statements[1])
    assert.matches("^CREATE INDEX", sql.statements[2])
    assert.are.equal(alter, sql_of({ dim = "1536", lists = "64", ["alter-dim"] = true }, "vector(768)").alter)
    assert.is_nil(sql_of({ dim = "1536", lists = "64", ["alter-dim"] = true }, "vector(1536)").alter)
    -- Unknown column type (dry-run without a database): the ALTER is shown.
    local spec = assert(create({ dim = "1536", lists = "64", ["alter-dim"] = true }))
    assert.are.equal(alter, index.create_sql(spec, "rag_documents", nil).alter)
    -- Without the flag, never.
    assert.is_nil(sql_of({ dim = "1536", lists = "64" }, "real[]").alter)
  end)

  it("halfvec(N): cada opclass vira a classe halfvec_*_ops do pgvector", function()
    for short, full in pairs({ cosine = "halfvec_cosine_ops", l2 = "halfvec_l2_ops", ip = "halfvec_ip_ops" }) do
      for _, method in ipairs({ "ivfflat", "hnsw" }) do
        local opts = { dim = "3072", opclass = short, method = method }
        if method == "ivfflat" then opts.lists = "64" end
        local sql = sql_of(opts, "halfvec(3072)")
        assert.matches("USING " .. method .. " %(\"embedding\" " .. full .. "%)", sql.create)
        assert.are.equal(full, sql.opclass)
        assert.is_nil(sql.alter)
      end
    end
  end)

  it("o tipo do índice: o da coluna; com --alter-dim ou coluna desconhecida, o de database.storage", function()
    local function kind(opts, storage, column)
      return index.index_type(assert(index.validate_create(opts, {}, "rag_documents", storage)), column)
    end
    local h = { dim = "3072", method = "hnsw" }
    assert.are.equal("halfvec", kind(h, "vector", "halfvec(3072)"))
    assert.are.equal("vector", kind(h, "halfvec", "vector(3072)"))
    -- "auto" on a new or real[] column: halfvec above 2000 dimensions, vector up to it.
    assert.are.equal("halfvec", kind(h, "auto", nil))
    assert.are.equal("vector", kind({ dim = "2000", method = "hnsw" }, "auto", "real[]"))
    assert.are.equal("halfvec", kind({ dim = "1536", method = "hnsw", ["alter-dim"] = true }, "auto", "halfvec(768)"))
    assert.are.equal("halfvec", kind({ dim = "1536", method = "hnsw", ["alter-dim"] = true }, "halfvec", "vector(1536)"))
    assert.are.equal("vector", kind({ dim = "1536", method = "hnsw", ["alter-dim"] = true }, "vector", "halfvec(1536)"))
  end)

  it("--alter-dim para halfvec(D): de real[], vector(N) e vector; nada quando já é halfvec(D)", function()
    local alter = 'ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE halfvec(3072) '
      .. 'USING "embedding"::halfvec(3072)'
    local spec = assert(index.validate_create({ dim = "3072", method = "hnsw", ["alter-dim"] = true }, {},
      "rag_documents", "halfvec"))
    for _, column in ipairs({ "real[]", "vector(3072)", "vector", "halfvec(1536)" }) do
      local sql = index.create_sql(spec, "rag_documents", column)
      assert.are.equal(alter, sql.alter, column)
      assert.are.equal(alter, sql.statements[1])
      assert.matches("halfvec_cosine_ops", sql.create)
    end
    assert.is_nil(index.create_sql(spec, "rag_documents", "halfvec(3072)").alter)
    -- And back to vector(D) when storage says so.
    local back = assert(index.validate_create({ dim = "1536", lists = "64", ["alter-dim"] = true }, {},
      "rag_documents", "vector"))
    assert.are.equal('ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE vector(1536) '
      .. 'USING "embedding"::vector(1536)', index.create_sql(back, "rag_documents", "halfvec(1536)").alter)
  end)

  it("o nome da tabela é sempre citado como identificador", function()
    local spec = assert(index.validate_create({ dim = "8", lists = "1" }, {}, 'docs"; drop table x; --'))
    local sql = index.create_sql(spec, 'docs"; drop table x; --', "vector(8)")
    assert.matches('ON "docs""; drop table x; %-%-" USING', sql.create)
    assert.are.equal('docs"; drop table x; --_embedding_ivfflat', spec.name)
  end)

  it("DROP INDEX CONCURRENTLY IF EXISTS e a configuração de sessão", function()
    assert.are.equal('DROP INDEX CONCURRENTLY IF EXISTS "rag_documents_embedding_ivfflat"',
      index.drop_sql("rag_documents_embedding_ivfflat"))
    assert.are.equal("SET ivfflat.probes = 10", index.session_setting("ivfflat", { probes = 10 }))
    assert.are.equal("SET ivfflat.probes = 20", index.session_setting("ivfflat", { probes = 20 }))
    assert.are.equal("SET hnsw.ef_search = 40", index.session_setting("hnsw", {}))
  end)
end)

describe("validação das flags", function()
  local function rejects(opts, pattern)
    local spec, err = create(opts)
    assert.is_nil(spec)
    assert.is_string(err)
    assert.matches(pattern, err)
    return err
  end

  it("--dim obrigatório, 1..16000 e no máximo 4000 para índice (o limite do halfvec)", function()
    rejects({ lists = "64" }, "%-%-dim é obrigatório")
    rejects({ dim = "0", lists = "64" }, "entre 1 e 16000")
    rejects({ dim = "16001", lists = "64" }, "entre 1 e 16000")
    rejects({ dim = "abc", lists = "64" }, "entre 1 e 16000")
    rejects({ dim = "-5", lists = "64" }, "entre 1 e 16000")
    -- 2000 < dim <= 4000 depends on the column type: storage_problem decides.
    assert.is_truthy(create({ dim = "3072", lists = "64" }))
    assert.is_truthy(create({ dim = "4000", method = "hnsw" }))
    local err = rejects({ dim = "4001", method = "hnsw" }, "nem halfvec")
    assert.matches("4000 dimensões", err)
    assert.matches("provider%.dimensions", err)
  end)

  it("--lists obrigatório para ivfflat, 1..32768, proibido em hnsw", function()
    local err = rejects({ dim = "1536" }, "%-%-lists é obrigatório")
    assert.matches("64", err)
    assert.matches("2000", err)
    rejects({ dim = "1536", lists = "0" }, "entre 1 e 32768")
    rejects({ dim = "1536", lists = "32769" }, "entre 1 e 32768")
    rejects({ dim = "1536", lists = "10.5" }, "entre 1 e 32768")
    rejects({ dim = "1536", lists = "1e3" }, "entre 1 e 32768")
    assert.are.equal(32768, create({ dim = "1536", lists = "32768" }).lists)
    rejects({ dim = "1536", method = "hnsw", lists = "100" }, "só vale para %-%-method ivfflat")
  end)

  it("--m 2..100, --ef-construction 4..1000 e >= 2 × m; só com hnsw", function()
    rejects({ dim = "1536", method = "hnsw", m = "1" }, "%-%-m deve ser um inteiro entre 2 e 100")
    rejects({ dim = "1536", method = "hnsw", m = "101", ["ef-construction"] = "400" }, "entre 2 e 100")
    rejects({ dim = "1536", method = "hnsw", ["ef-construction"] = "1001" }, "entre 4 e 1000")
    local err = rejects({ dim = "1536", method = "hnsw", m = "40" }, "pelo menos 2 × %-%-m")
    assert.matches("%(64%)", err)
    assert.is_truthy(create({ dim = "1536", method = "hnsw", m = "32", ["ef-construction"] = "64" }))
    rejects({ dim = "1536", lists = "64", m = "16" }, "só valem para %-%-method hnsw")
    rejects({ dim = "1536", lists = "64", ["ef-construction"] = "64" }, "só valem para %-%-method hnsw")
  end)

  it("--method, --opclass e --name", function()
    rejects({ dim = "1536", lists = "64", method = "ivfpq" }, "ivfflat ou hnsw")
    rejects({ dim = "1536", lists = "64", opclass = "hamming" }, "cosine, l2 ou ip")
    rejects({ dim = "1536", lists = "64", name = "" }, "1 a 63 bytes")
    rejects({ dim = "1536", lists = "64", name = string.rep("x", 64) }, "1 a 63 bytes")
    local spec, err = index.validate_create({ dim = "8", lists = "1" }, {}, string.rep("t", 50))
    assert.is_nil(spec)
    assert.matches("%-%-name", err)
  end)

  it("--maintenance-work-mem no formato do PostgreSQL", function()
    assert.are.equal("2GB", (index.parse_memory("2GB")))
    assert.are.equal("64MB", (index.parse_memory("64mb")))
    assert.are.equal("512MB", (index.parse_memory("512 MB")))
    local text, kb = index.parse_memory("1024kB")
    assert.are.equal("1024kB", text)
    assert.are.equal(1024, kb)
    for _, bad in ipairs({ "2", "2XB", "GB", "-1GB", "1.5GB", "512kB", "3TB", "2GB; drop table x", "'2GB'" }) do
      local ok, err = index.parse_memory(bad)
      assert.is_nil(ok, bad)
      assert.matches("64MB, 2GB ou 4GB", err)
    end
    rejects({ dim = "1536", lists = "64", ["maintenance-work-mem"] = "muito" }, "%-%-maintenance%-work%-mem")
  end)
end)

describe("diagnóstico do armazenamento", function()
  local spec = assert(create({ dim = "1536", lists = "64" }))

  it("real[] sem pgvector: explica a extensão ausente e como migrar", function()
    local msg = index.storage_problem({ column = "real[]", available = false }, spec)
    assert.matches("real%[%]", msg)
    assert.matches("pgvector", msg)
    assert.matches('"vector"', msg)
    assert.matches("não está instalada", msg)
    assert.matches('database.storage = "vector"', msg)
    assert.matches("ragops migrate", msg)
    assert.matches("%-%-alter%-dim", msg)
    -- Even --alter-dim cannot help without the extension.
    local with_alter = assert(create({ dim = "1536", lists = "64", ["alter-dim"] = true }))
    assert.is_string(index.storage_problem({ column = "real[]", available = false }, with_alter))
    -- status/drop (no spec) get the same diagnosis.
    assert.matches("não está instalada", index.storage_problem({ column = "real[]" }, nil))
  end)

  it("pgvector disponível mas não criado no banco", function()
    local msg = index.storage_problem({ column = "real[]", available = true }, spec)
    assert.matches("disponível no servidor", msg)
    assert.matches("não foi criada neste banco", msg)
  end)

  it("extensão instalada e coluna real[]: diz isso e aceita --alter-dim", function()
    local msg = index.storage_problem({ column = "real[]", extension = "0.7.0" }, spec)
    assert.matches("está instalada", msg)
    assert.matches("coluna embedding é real%[%]", msg)
    local with_alter = assert(create({ dim = "1536", lists = "64", ["alter-dim"] = true }))
    assert.is_nil(index.storage_problem({ column = "real[]", extension = "0.7.0" }, with_alter))
  end)

  it("vector(N): dimensão divergente, sem dimensão e hnsw em pgvector antigo", function()
    assert.is_nil(index.storage_problem({ column = "vector(1536)", extension = "0.7.0" }, spec))
    assert.matches("vector%(768%), mas %-%-dim é 1536",
      index.storage_problem({ column = "vector(768)", extension = "0.7.0" }, spec))
    assert.matches("sem dimensão fixa", index.storage_problem({ column = "vector", extension = "0.7.0" }, spec))
    local hnsw = assert(create({ dim = "1536", method = "hnsw" }))
    assert.matches("0%.5%.0", index.storage_problem({ column = "vector(1536)", extension = "0.4.4" }, hnsw))
    assert.is_nil(index.storage_problem({ column = "vector(1536)", extension = "0.5.0" }, hnsw))
    assert.is_nil(index.storage_problem({ column = "vector(1536)", extension = "0.10.1" }, hnsw))
  end)
end)

describe("diagnóstico do armazenamento com halfvec", function()
  local function spec_of(opts, storage)
    opts.method = opts.method or "hnsw"
    return assert(index.validate_create(opts, {}, "rag_documents", storage))
  end
  local V = "0.8.6"

  it("vector(3072) sem --alter-dim: recusado, apontando database.storage = \"halfvec\"", function()
    local msg = index.storage_problem({ column = "vector(3072)", extension = V }, spec_of({ dim = "3072" }))
    assert.matches("até 2000 dimensões", msg)
    assert.matches('database.storage = "halfvec"', msg, 1, true)
    assert.matches("%-%-alter%-dim", msg)
    assert.is_nil(msg:find("Reduza", 1, true))
  end)

  it("halfvec(3072) passa; 4000 é o teto; pgvector antes de 0.7.0 não tem halfvec", function()
    assert.is_nil(index.storage_problem({ column = "halfvec(3072)", extension = V }, spec_of({ dim = "3072" })))
    assert.is_nil(index.storage_problem({ column = "halfvec(4000)", extension = V }, spec_of({ dim = "4000" })))
    assert.matches("halfvec%(3072%), mas %-%-dim é 1536",
      index.storage_problem({ column = "halfvec(3072)", extension = V }, spec_of({ dim = "1536" })))
    assert.matches("0%.7%.0", index.storage_problem({ column = "halfvec(3072)", extension = "0.6.2" },
      spec_of({ dim = "3072" })))
    assert.matches("halfvec sem dimensão fixa", index.storage_problem({ column = "halfvec", extension = V },
      spec_of({ dim = "3072" })))
    assert.is_nil(index.storage_problem({ column = "halfvec(3072)", extension = V }, nil))
  end)

  it("--alter-dim: recusa o que não dá (vector acima de 2000, tipo estranho, halfvec sem 0.7.0)", function()
    local to_vector = spec_of({ dim = "3072", ["alter-dim"] = true }, "vector")
    local msg = index.storage_problem({ column = "real[]", extension = V }, to_vector)
    assert.matches('database.storage = "halfvec"', msg, 1, true)
    msg = index.storage_problem({ column = "halfvec(3072)", extension = V }, to_vector)
    assert.matches("até 2000 dimensões", msg)
    local to_half = spec_of({ dim = "3072", ["alter-dim"] = true }, "halfvec")
    for _, column in ipairs({ "real[]", "vector(3072)", "vector(1536)", "vector", "halfvec(1536)" }) do
      assert.is_nil(index.storage_problem({ column = column, extension = V }, to_half), column)
    end
    msg = index.storage_problem({ column = "double precision[]", extension = V }, to_half)
    assert.matches("%-%-alter%-dim recusado: a coluna embedding é double precision%[%]", msg)
    assert.matches("halfvec%(3072%)", msg)
    assert.matches("0%.7%.0", index.storage_problem({ column = "real[]", extension = "0.6.0" }, to_half))
  end)

  it("status descreve o tipo da coluna", function()
    assert.matches("meia precisão, índices até 4000", index.type_note("halfvec(3072)"))
    assert.matches("até 2000 dimensões, acima use halfvec", index.type_note("vector(1536)"))
    assert.are.equal("", index.type_note("real[]"))
  end)
end)

describe("recomendações do pgvector", function()
  it("lists = linhas/1000 até 1M, sqrt(linhas) acima; probes = sqrt(lists)", function()
    assert.are.same({ 1, 1 }, { index.recommend(0) })
    assert.are.same({ 64, 8 }, { index.recommend(64000) })
    assert.are.same({ 1000, 32 }, { index.recommend(1000000) })
    assert.are.same({ 2000, 45 }, { index.recommend(4000000) })
  end)
end)

-- The pgvector path cannot run here (pgvector is not installed on the test
-- machine), so `ragops index ...` runs through ragops.cli against a fake
-- connection that answers the catalog queries like a pgvector database and
-- records every statement sent.
describe("ragops index com um banco pgvector simulado", function()
  local store_target = require "ragops.store.target"
  local cli = require "ragops.cli"
  local core = require "ragops.core"
  local log = require "ragops.obs.log"
  local real_connect = store_target.connect
  local conn, state, out, err

  local function fake_conn()
    local c = { sent = {}, closed = false }
    function c:query(sql, ...)
      local args = { ... }
      self.sent[#self.sent + 1] = sql
      if state.fail_on and sql:find(state.fail_on, 1, true) then
        -- What the failed statement left in the catalog (an INVALID index).
        state.relation = state.left_on_failure
        return nil, state.fail_msg, state.fail_state
      end
      if sql:find("format_type", 1, true) then
        return state.column and { { type = state.column } } or {}
      end
      if sql:find("pg_available_extensions", 1, true) then
        return { { installed = state.extension, available = true } }
      end
      if sql:find("relkind", 1, true) then return state.relation and { state.relation } or {} end
      if sql:find("vector_dims", 1, true) or sql:find("array_length", 1, true) then
        return { { n = state.wrong_dims or 0 } }
      end
      if sql:find("limit $1", 1, true) then return { { n = math.min(state.rows or 0, args[1]) } } end
      if sql:find("pg_stat_progress_create_index", 1, true) then return {} end
      if sql:find("indisvalid", 1, true) then return state.indexes or {} end
      if sql:find("count(*)", 1, true) then return { { n = state.rows or 0 } } end
      return {}
    end
    function c:close() self.closed = true end
    function c:is_ok() return true end
    -- Notices the server "sent" since the last call (state.notices, once).
    function c:notices()
      local notes = state.notices or {}
      state.notices = nil
      return notes, 0
    end
    return c
  end

  local function sink()
    local s = { text = "" }
    function s:write(...) for _, v in ipairs({ ... }) do self.text = self.text .. tostring(v) end return self end
    return s
  end

  local function ragops(...)
    local real_out, real_err = io.stdout, io.stderr
    out, err = sink(), sink()
    io.stdout, io.stderr = out, err
    log.sink = err
    local ok, code = pcall(cli.main, ...)
    io.stdout, io.stderr = real_out, real_err
    log.sink = real_err
    assert(ok, code)
    return code
  end

  -- Statements sent that are not catalog reads (ragops.vector.index writes DDL in
  -- upper case and its catalog queries in lower case).
  local function ddl()
    local list = {}
    for _, sql in ipairs(conn.sent) do
      local head = sql:match("^%s*(%u+)")
      if head then list[#list + 1] = sql end
    end
    return list
  end

  after_each(function() store_target.connect = real_connect end)

  before_each(function()
    _G.RAGOPS_HOME = here .. "/../../.."
    store_target.connect = function() return conn end
    core.trap_signals = function() end
    state = { column = "vector(1536)", extension = "0.7.0", rows = 5000 }
    conn = fake_conn()
  end)

  it("cria o ivfflat CONCURRENTLY com maintenance_work_mem, um comando por vez, sem BEGIN", function()
    local code = ragops("index", "create", "--lists", "64", "--dim", "1536", "--concurrently",
      "--maintenance-work-mem", "4GB")
    assert.are.equal(0, code, err.text)
    assert.are.same({
      "SET maintenance_work_mem = '4GB'",
      'CREATE INDEX CONCURRENTLY "rag_documents_embedding_ivfflat" ON "rag_documents" USING ivfflat '
        .. '("embedding" vector_cosine_ops) WITH (lists = 64)',
      "RESET maintenance_work_mem",
    }, ddl())
    assert.matches("índice rag_documents_embedding_ivfflat criado", out.text)
    assert.matches("SET ivfflat.probes = 10", out.text)
    assert.matches("pg_stat_progress_create_index", err.text)
    assert.is_true(conn.closed)
  end)

  it("avisa quando a tabela tem menos linhas que listas", function()
    state.rows = 10
    assert.are.equal(0, ragops("index", "create", "--lists", "64", "--dim", "1536"))
    assert.matches("menos linhas com embedding %(10%) que listas %(64%)", err.text)
  end)

  it("hnsw: WITH (m, ef_construction); recusado em pgvector < 0.5.0", function()
    assert.are.equal(0, ragops("index", "create", "--method", "hnsw", "--dim", "1536", "--opclass", "l2"))
    assert.are.same({ 'CREATE INDEX "rag_documents_embedding_hnsw" ON "rag_documents" USING hnsw '
      .. '("embedding" vector_l2_ops) WITH (m = 16, ef_construction = 64)' }, ddl())
    assert.matches("SET hnsw.ef_search = 40", out.text)
    state.extension = "0.4.4"
    conn = fake_conn()
    assert.are.equal(2, ragops("index", "create", "--method", "hnsw", "--dim", "1536"))
    assert.matches("pgvector 0%.5%.0", err.text)
    assert.are.same({}, ddl())
  end)

  it("não sobrescreve uma relação com o mesmo nome", function()
    state.relation = { kind = "i", method = "ivfflat", on_target = true }
    assert.are.equal(2, ragops("index", "create", "--lists", "64", "--dim", "1536"))
    assert.matches("já existe", err.text)
    assert.matches("ragops index drop", err.text)
    assert.are.same({}, ddl())
  end)

  it("--alter-dim com pgvector e coluna real[]: ALTER antes do índice, só sem dimensões divergentes", function()
    state.column = "real[]"
    assert.are.equal(2, ragops("index", "create", "--lists", "64", "--dim", "1536"))
    assert.matches("extensão vector 0%.7%.0 está instalada, mas a coluna embedding é real%[%]", err.text)
    conn = fake_conn()
    assert.are.equal(0, ragops("index", "create", "--lists", "64", "--dim", "1536", "--alter-dim"))
    local sent = ddl()
    assert.are.equal('ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE vector(1536) '
      .. 'USING "embedding"::vector(1536)', sent[1])
    assert.matches("^CREATE INDEX", sent[2])
    state.wrong_dims = 3
    conn = fake_conn()
    assert.are.equal(2, ragops("index", "create", "--lists", "64", "--dim", "1536", "--alter-dim"))
    assert.matches("3 linha%(s%) têm embedding com dimensão diferente de 1536", err.text)
    assert.are.same({}, ddl())
  end)

  it("falha do CREATE INDEX CONCURRENTLY: código 2 e dica do índice INVALID", function()
    state.fail_on = "CREATE INDEX"
    state.fail_msg = "memory required is 900 MB, maintenance_work_mem is 64 MB"
    state.fail_state = "54000"
    state.left_on_failure = { kind = "i", method = "ivfflat", on_target = true, valid = false }
    assert.are.equal(2, ragops("index", "create", "--lists", "64", "--dim", "1536", "--concurrently"))
    assert.matches("maintenance_work_mem is 64 MB", err.text)
    assert.matches("o índice rag_documents_embedding_ivfflat ficou INVALID", err.text)
    assert.matches('DROP INDEX CONCURRENTLY IF EXISTS "rag_documents_embedding_ivfflat";', err.text, 1, true)
    assert.is_true(conn.closed)
    state.fail_state, state.relation, state.left_on_failure = "08006", nil, nil
    conn = fake_conn()
    assert.are.equal(4, ragops("index", "create", "--lists", "64", "--dim", "1536"))
  end)

  it("drop: só índices vetoriais da tabela alvo, com DROP INDEX CONCURRENTLY IF EXISTS", function()
    assert.are.equal(0, ragops("index", "drop"))
    assert.matches("não existe; nada a fazer", out.text)
    assert.are.same({}, ddl())
    state.relation = { kind = "i", method = "btree", on_target = true }
    conn = fake_conn()
    assert.are.equal(2, ragops("index", "drop", "--name", "rag_documents_pkey"))
    assert.matches("não é um índice vetorial", err.text)
    assert.are.same({}, ddl())
    state.relation = { kind = "i", method = "hnsw", on_target = true }
    conn = fake_conn()
    assert.are.equal(0, ragops("index", "drop", "--method", "hnsw"))
    assert.are.same({ 'DROP INDEX CONCURRENTLY IF EXISTS "rag_documents_embedding_hnsw"' }, ddl())
  end)

  describe("com database.storage = \"halfvec\" e provider.dim = 3072", function()
    local cfg_path
    before_each(function()
      cfg_path = os.tmpname()
      local f = assert(io.open(cfg_path, "w"))
      f:write('return { database = { storage = "halfvec" }, provider = { dim = 3072 } }')
      f:close()
      state.column = "halfvec(3072)"
      state.extension = "0.8.6"
    end)
    after_each(function() os.remove(cfg_path) end)

    it("hnsw em halfvec(3072): halfvec_cosine_ops, sem ALTER", function()
      assert.are.equal(0, ragops("index", "create", "--method", "hnsw", "--dim", "3072", "--config", cfg_path),
        err.text)
      assert.are.same({ 'CREATE INDEX "rag_documents_embedding_hnsw" ON "rag_documents" USING hnsw '
        .. '("embedding" halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)' }, ddl())
      assert.matches("criado em rag_documents %(hnsw, halfvec_cosine_ops%)", out.text)
    end)

    it("--alter-dim de vector(3072): ALTER para halfvec(3072) conferindo as dimensões", function()
      state.column = "vector(3072)"
      assert.are.equal(2, ragops("index", "create", "--method", "hnsw", "--dim", "3072", "--config", cfg_path))
      assert.matches('database.storage = "halfvec"', err.text, 1, true)
      assert.are.same({}, ddl())
      conn = fake_conn()
      assert.are.equal(0, ragops("index", "create", "--method", "hnsw", "--dim", "3072", "--alter-dim",
        "--config", cfg_path), err.text)
      local sent = ddl()
      assert.are.equal('ALTER TABLE "rag_documents" ALTER COLUMN "embedding" TYPE halfvec(3072) '
        .. 'USING "embedding"::halfvec(3072)', sent[1])
      assert.matches("halfvec_cosine_ops", sent[2])
      assert.matches("vai virar halfvec%(3072%)", err.text)
      local checked = false
      for _, sql in ipairs(conn.sent) do checked = checked or sql:find("vector_dims", 1, true) ~= nil end
      assert.is_true(checked)
    end)

    it("status mostra o tipo halfvec e o seu limite", function()
      assert.are.equal(0, ragops("index", "status", "--config", cfg_path))
      assert.matches("coluna embedding: halfvec%(3072%); halfvec: meia precisão, índices até 4000 dimensões", out.text)
    end)
  end)

  it("status lista os índices, marca INVALID e recomenda probes", function()
    state.rows = 4000000
    state.indexes = {
      { name = "rag_documents_embedding_ivfflat", method = "ivfflat", valid = false, size = "1 GB",
        definition = "CREATE INDEX ... WITH (lists='2000')" },
    }
    assert.are.equal(0, ragops("index", "status"))
    assert.matches("pgvector: instalado %(extensão vector 0%.7%.0%)", out.text)
    assert.matches("rag_documents_embedding_ivfflat %(ivfflat, 1 GB, INVALID", out.text)
    assert.matches("lists ≈ 2000 e probes ≈ 45", out.text)
    assert.matches("probes 10 %(runbook: 10–20%)", out.text)
  end)
end)

-- validate.pgvector_sql is the retrieval query `ragops validate` measures:
-- its parameter must have the column's type, or a halfvec index is not used.
describe("SQL de busca do validate por tipo de coluna", function()
  local validate = require "ragops.vector.validate"

  it("halfvec: o parâmetro vira $1::halfvec nos dois usos; vector continua o padrão", function()
    assert.are.equal('select entity_type, entity_id, chunk_index, 1 - (embedding <=> $1::halfvec) as score'
      .. ' from "rag_documents" where embedding is not null order by embedding <=> $1::halfvec limit $2',
      validate.pgvector_sql('"rag_documents"', "halfvec"))
    assert.are.equal(validate.pgvector_sql('"t"'), validate.pgvector_sql('"t"', "vector"))
    assert.matches("<=> %$1::vector limit", validate.pgvector_sql('"t"', "vector"))
  end)

  it("outro tipo é erro de uso", function()
    assert.has_error(function() validate.pgvector_sql('"t"', "real[]") end,
      'validate.pgvector_sql: column_type deve ser "vector" ou "halfvec", recebi "real[]"')
  end)
end)

describe("index.describe_notice: avisos do servidor em pt-BR", function()
  local index = require "ragops.vector.index"

  it("o grafo HNSW que não cabe em maintenance_work_mem vira uma orientação", function()
    local line = index.describe_notice({ severity = "NOTICE", sqlstate = "00000",
      message = "hnsw graph no longer fits into maintenance_work_mem after 152 tuples",
      hint = "Increase maintenance_work_mem to speed up builds." })
    assert.are.equal("o grafo HNSW deixou de caber em maintenance_work_mem depois de 152 vetores: o resto da "
      .. "construção fica bem mais lento; recrie com --maintenance-work-mem maior (ex.: 2GB)", line)
  end)

  it("IVFFlat com poucos dados, e qualquer outro aviso embrulhado com severidade e dica", function()
    assert.matches("^o pgvector avisa que o índice IVFFlat foi criado com poucos dados",
      index.describe_notice({ severity = "NOTICE", sqlstate = "00000",
        message = "ivfflat index created with little data", hint = "Drop the index until the table has more data." }))
    assert.are.equal("aviso do PostgreSQL (WARNING 01000): algo (dica do servidor: faça x)",
      index.describe_notice({ severity = "WARNING", sqlstate = "01000", message = "algo", hint = "faça x" }))
    assert.are.equal("aviso do PostgreSQL (NOTICE): outro",
      index.describe_notice({ severity = "NOTICE", sqlstate = "", message = "outro", hint = "" }))
  end)
end)
