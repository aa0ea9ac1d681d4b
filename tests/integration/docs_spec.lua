-- docs_spec.lua: the commands in README.md and docs/*.md run. Every fenced
-- block whose info string is `sh doc-test` (or `sh doc-test exit=N`; with
-- `pgvector`, only when the test server has it) is a runnable example: each of its commands (one per line; "\" continues a line,
-- "# ..." comments and blank lines are dropped) runs in order with `sh -c`,
-- the test binary on PATH as `ragops`, against a fresh database per document
-- (migrated, with demo-shaped `verses` and `fortunes`) and the suite's
-- embed-server, and must exit with N (default 0). The commands stay as an
-- operator types them; the only rewrites are the paths of a production host
-- (PATHS below), mapped to the test's scratch folder. Blocks that cannot run
-- here (make demo, systemd, a fixed port, destructive admin steps) stay
-- unmarked. The spec also fails when the marks thin out (MIN_EXAMPLES, and
-- at least one in each of MUST_HAVE).
local H = require "tests.integration.helper"

local MIN_EXAMPLES = 55
local MUST_HAVE = { "README.md", "docs/runbook.md", "docs/sincronizacao.md",
                    "docs/limites-e-riscos.md", "docs/troca-de-modelo.md" }
-- Production paths in the examples -> files in the scratch folder.
local PATHS = {
  { "/etc/ragops/config.lua", "config.lua" },
  { "/var/log/ragops/", "log/" },
}
local COMMAND_TIMEOUT_S = 300
local HAS_PGVECTOR = false
for _, storage in ipairs(H.storages) do HAS_PGVECTOR = HAS_PGVECTOR or storage == "vector" end

-- The marked blocks of a markdown text: { { line = N, exit = N, commands = {...} } }.
local function marked_blocks(text)
  local blocks, block, pending, number = {}, nil, "", 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    number = number + 1
    local fence, info = line:match("^(%s*```+)(.*)$")
    if fence and block then
      blocks[#blocks + 1] = block
      block = nil
    elseif fence and not block and info:match("^sh%s+doc%-test") then
      local code = info:match("exit=(%d+)")
      block = { line = number, exit = tonumber(code or "0"), commands = {},
                pgvector = info:match("%spgvector") ~= nil }
    elseif block then
      line = pending .. line:gsub("^%s+", "")
      pending = ""
      if line:match("\\%s*$") then
        pending = line:gsub("%s*\\%s*$", " ")
      else
        local command = line:gsub("%s+#%s.*$", ""):gsub("^#.*$", ""):gsub("%s+$", "")
        if command ~= "" then block.commands[#block.commands + 1] = command end
      end
    end
  end
  assert(not block, "bloco doc-test sem ``` de fechamento (linha " .. (block and block.line or 0) .. ")")
  return blocks
end

local function documents()
  local out = { "README.md" }
  local p = io.popen("cd " .. H.q(H.source_dir) .. " && ls docs/*.md docs/ops/*.md 2>/dev/null")
  for path in p:lines() do out[#out + 1] = path end
  p:close()
  return out
end

-- A scratch folder for one document: `ragops` on PATH, plans/ and lua/ of
-- the source tree, an empty config.lua (the examples' /etc/ragops/config.lua)
-- and log/.
local function scratch()
  local dir = os.tmpname()
  os.remove(dir)
  local script = table.concat({
    "mkdir -p %s/bin %s/log",
    "ln -s %s %s/bin/ragops",
    "ln -s %s/plans %s/plans",
    "ln -s %s/lua %s/lua",
  }, " && ")
  local q = H.q(dir)
  local code, _, err = H.sh(script:format(q, q, H.q(H.bin), q, H.q(H.source_dir), q,
    H.q(H.source_dir), q))
  assert(code == 0, "pasta de trabalho do teste de documentação: " .. err)
  local f = assert(io.open(dir .. "/config.lua", "w"))
  f:write("return {}\n")
  f:close()
  return dir
end

local function rewrite(command, dir)
  for _, pair in ipairs(PATHS) do
    local pattern = pair[1]:gsub("%p", "%%%0")
    local replacement = (dir .. "/" .. pair[2]):gsub("%%", "%%%%")
    command = command:gsub(pattern, replacement)
  end
  return command
end

-- Runs one example; returns exit code, stdout, stderr.
local function run_example(command, dir, url)
  return H.sh(("cd %s && env PATH=%s %s timeout %d sh -c %s"):format(H.q(dir),
    H.q(dir .. "/bin:" .. os.getenv("PATH")), H.env(url), COMMAND_TIMEOUT_S, H.q(rewrite(command, dir))))
end

local function count_examples(blocks)
  local n = 0
  for _, block in ipairs(blocks) do n = n + #block.commands end
  return n
end

local function read_doc(doc)
  local text = H.read_all(H.source_dir .. "/" .. doc)
  assert(text ~= "", "não foi possível ler " .. doc)
  return text
end

describe("marcação dos exemplos executáveis", function()
  it("lê blocos, continuações, comentários e o código esperado", function()
    local blocks = marked_blocks(table.concat({
      "texto", "```sh", "ragops nao-marcado", "```",
      "```sh doc-test", "ragops migrate   # comentário", "# só comentário", "",
      "ragops backfill \\", "  --dry-run", "```",
      "```sh doc-test exit=1 pgvector", "ragops failures retry", "```",
    }, "\n"))
    assert.are.same({
      { line = 5, exit = 0, pgvector = false, commands = { "ragops migrate", "ragops backfill --dry-run" } },
      { line = 12, exit = 1, pgvector = true, commands = { "ragops failures retry" } },
    }, blocks)
  end)

  it(("há pelo menos %d exemplos marcados, e pelo menos um em cada documento principal"):format(MIN_EXAMPLES),
    function()
      local total, per_doc = 0, {}
      for _, doc in ipairs(documents()) do
        per_doc[doc] = count_examples(marked_blocks(read_doc(doc)))
        total = total + per_doc[doc]
      end
      assert.is_true(total >= MIN_EXAMPLES, ("%d exemplos marcados (mínimo %d)"):format(total, MIN_EXAMPLES))
      local missing = {}
      for _, doc in ipairs(MUST_HAVE) do
        if (per_doc[doc] or 0) == 0 then missing[#missing + 1] = doc end
      end
      assert.are.same({}, missing)
    end)
end)

-- The codes in the first column of the table under the heading that names
-- "Códigos de saída" in text, as a sorted list.
local function exit_table_codes(text)
  local section = text:match("\n#+ [^\n]*Códigos de saída\n(.-)\n#") or text:match("\n#+ [^\n]*Códigos de saída\n(.*)$")
  assert(section, "sem a seção Códigos de saída")
  local codes = {}
  for code in section:gmatch("\n|%s*(%d+)%s*|") do codes[#codes + 1] = tonumber(code) end
  table.sort(codes)
  return codes
end

describe("fatos da documentação conferidos no código", function()
  it("as tabelas de códigos de saída listam exatamente os de ragops.exit", function()
    -- Distinct codes: several names share one (exit.internal and
    -- exit.usage are both 2; exit.below_threshold and exit.dead_letters 1).
    local expected, seen = {}, {}
    for _, code in pairs(require("ragops.util.exit")) do
      if type(code) == "number" and not seen[code] then seen[code] = true; expected[#expected + 1] = code end
    end
    table.sort(expected)
    for _, doc in ipairs({ "README.md", "docs/runbook.md", "docs/arquitetura.md" }) do
      assert.are.same({ doc = doc, codes = expected }, { doc = doc, codes = exit_table_codes(read_doc(doc)) })
    end
  end)

  it("a versão do esquema citada é a que o ragops migrate aplica", function()
    local url = H.fresh_db("ragops_doc_schema")
    local code, out, err = H.ragops(url, "migrate")
    assert.are.equal(0, code, err)
    local latest = out:match("esquema na versão (%d+)")
    assert.is_string(latest, out)
    local wrong = {}
    for _, doc in ipairs(documents()) do
      local text = read_doc(doc)
      for _, pattern in ipairs({ "esquema na versão (%d+)", "já está atualizado %(versão (%d+)%)" }) do
        for version in text:gmatch(pattern) do
          if version ~= latest then wrong[#wrong + 1] = ("%s: versão %s (a atual é %s)"):format(doc, version, latest) end
        end
      end
    end
    H.psql(H.db_url("postgres"), "drop database if exists ragops_doc_schema with (force)")
    assert.are.same({}, wrong)
  end)
end)

describe("portas da demonstração", function()
  after_each(H.cleanup)

  -- The RAGOPS_DEMO_*_PORT variables the demo scripts read.
  local function demo_port_variables()
    local names, seen = {}, {}
    for _, script in ipairs({ "scripts/demo.sh", "scripts/demo_model.sh" }) do
      for name in H.read_all(H.source_dir .. "/" .. script):gmatch("RAGOPS_DEMO_[%u_]+_PORT") do
        if not seen[name] then seen[name] = true; names[#names + 1] = name end
      end
    end
    table.sort(names)
    return names
  end

  it("o README documenta cada variável de porta que os scripts leem", function()
    local names = demo_port_variables()
    assert.are.same({ "RAGOPS_DEMO_EMBED_PORT", "RAGOPS_DEMO_MODEL_PORT", "RAGOPS_DEMO_PG_PORT" }, names)
    local readme = read_doc("README.md")
    local missing = {}
    for _, name in ipairs(names) do
      if not readme:find("`" .. name .. "`", 1, true) then missing[#missing + 1] = name end
    end
    assert.are.same({}, missing)
  end)

  it("porta ocupada: embed_server.sh e pg.sh dizem qual variável mudar", function()
    local busy = H.start_embed_server("")
    local port = busy.url:match(":(%d+)/v1$")
    local dir = os.tmpname()
    os.remove(dir)
    local code, _, err = H.sh(("cd %s && RAGOPS_BIN=%s RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_EMBED_PORT "
      .. "scripts/embed_server.sh start %s %s"):format(H.q(H.source_dir), H.q(H.bin), H.q(dir .. "/e.pid"), port))
    H.stop_embed_server(busy)
    assert.are.equal(1, code, err)
    assert.matches("a porta " .. port .. " já está em uso por outro processo; escolha outra porta com a "
      .. "variável RAGOPS_DEMO_EMBED_PORT", err, 1, true)

    local pg_port = H.base_url:match("@[^:/]+:(%d+)/")
    code, _, err = H.sh(("cd %s && RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_PG_PORT scripts/pg.sh start --fast %s %s")
      :format(H.q(H.source_dir), H.q(dir .. "/pg"), pg_port))
    H.sh("rm -rf " .. H.q(dir))
    assert.are.equal(1, code, err)
    assert.matches("a porta " .. pg_port .. " já está em uso por outro processo; escolha outra porta com a "
      .. "variável RAGOPS_DEMO_PG_PORT", err, 1, true)
  end)

  it("scripts/demo.sh e scripts/demo_model.sh passam a variável de cada porta", function()
    local demo = H.read_all(H.source_dir .. "/scripts/demo.sh")
    local model = H.read_all(H.source_dir .. "/scripts/demo_model.sh")
    assert.matches("RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_PG_PORT scripts/pg.sh start", demo, 1, true)
    assert.matches("RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_EMBED_PORT scripts/embed_server.sh start", demo, 1, true)
    assert.matches("RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_MODEL_PORT scripts/embed_server.sh start", model, 1, true)
  end)
end)

describe("exemplos da documentação", function()
  for _, doc in ipairs(documents()) do
    local blocks = marked_blocks(read_doc(doc))
    if #blocks > 0 then
      it(doc .. ": cada exemplo marcado sai com o código declarado", function()
        local dir = scratch()
        local name = "ragops_doc_" .. doc:gsub("%.md$", ""):gsub("[^%w]", "_"):lower()
        local url = H.migrated_db(name, 60, 20)
        local problems = {}
        for _, block in ipairs(blocks) do
          local runnable = HAS_PGVECTOR or not block.pgvector
          for _, command in ipairs(runnable and block.commands or {}) do
            local code, out, err = run_example(command, dir, url)
            if code ~= block.exit then
              problems[#problems + 1] = ("%s:%d: `%s` saiu com %d (esperado %d)\n%s%s"):format(doc,
                block.line, command, code, block.exit, out:sub(-1500), err:sub(-1500))
            end
          end
        end
        H.sh("rm -rf " .. H.q(dir))
        H.psql(H.db_url("postgres"), ("drop database if exists %s with (force)"):format(name))
        assert.are.equal("", table.concat(problems, "\n"))
      end)
    end
  end
end)
