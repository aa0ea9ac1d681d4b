-- hostile_spec.lua: the hostile corpus of tests/hostile/ through the real
-- binary. Plans and configs that allocate without end, loop, escape the
-- sandbox, are bytecode or binary garbage, or return non-plans end in exit 2
-- with a pt-BR message naming the file and nothing written; plans whose
-- document() misbehaves for every row dead-letter their rows with the right
-- class (and abort after sandbox.max_breaches budget breaches), without
-- tracebacks in ragops_failures.message. Small limits come from
-- tests/hostile/small_limits.lua, so each case stays short. (The document()
-- cases that end the process, the watchdog and the run's heap cap, are in
-- tests/integration/sandbox_spec.lua.)
local H = require "tests.integration.helper"

local HOSTILE = "tests/hostile"
local LIMITS = HOSTILE .. "/small_limits.lua"
local ESCAPE_MARK = "/tmp/ragops-hostile-escape"

-- Corpus files of a folder, sorted.
local function corpus(folder, keep)
  local _, out = H.sh(("ls %s/%s/%s/*.lua"):format(H.q(H.source_dir), HOSTILE, folder))
  local files = {}
  for path in out:gmatch("[^\n]+") do
    local relative = path:sub(#H.source_dir + 2)
    if keep(relative) then files[#files + 1] = relative end
  end
  table.sort(files)
  return files
end

local function is_document_case(path) return path:find("/doc_", 1, true) ~= nil end

-- English a person could otherwise read, and traceback markers.
local ENGLISH = { "expected", "attempt to", "not enough memory", "stack traceback", "near '", "bad argument",
                  "No such file", "malformed", "unexpected symbol", "overflow" }

local function assert_ptbr_without_traceback(text)
  for _, english in ipairs(ENGLISH) do
    local position = text:find(english, 1, true)
    -- "(... overflow)" may follow a pt-BR text as the original in parentheses.
    if position and not text:sub(1, position):find("%(") then
      error(("texto em inglês (%q) na mensagem: %s"):format(english, text), 2)
    end
  end
  assert.is_nil(text:find("traceback", 1, true), text)
  assert.is_nil(text:find("[C]:", 1, true), text)
  assert.is_nil(text:find("ragops/plan/sandbox.lua", 1, true), text)
end

local function count(url, sql) return H.scalar(url, sql) end

describe("corpus hostil", function()
  local url
  setup(function() url = H.migrated_db("ragops_hostile", 5, 0) end)
  before_each(function() os.remove(ESCAPE_MARK) end)
  after_each(H.cleanup)

  local function assert_nothing_written()
    assert.are.equal(0, count(url, "select count(*) from rag_documents"))
    assert.are.equal(0, count(url, "select count(*) from ragops_failures"))
    assert.is_nil(io.open(ESCAPE_MARK, "r"), "o código hostil escapou do sandbox")
  end

  for _, path in ipairs(corpus("plans", function(p) return not is_document_case(p) end)) do
    it("plano " .. path .. ": código 2, mensagem em pt-BR que nomeia o arquivo, nada gravado", function()
      local code, out, err = H.ragops(url, ("run %s --config %s"):format(H.q(path), LIMITS))
      assert.are.equal(2, code, err)
      assert.truthy(err:find("ragops: plano " .. path, 1, true), err)
      assert_ptbr_without_traceback(err)
      assert.are.equal("", out)
      assert_nothing_written()
    end)
  end

  for _, path in ipairs(corpus("configs", function() return true end)) do
    it("configuração " .. path .. ": código 2, mensagem em pt-BR que nomeia o arquivo, nada gravado", function()
      local code, out, err = H.ragops(url, ("run %s/plans/doc_errors.lua --config %s"):format(HOSTILE, H.q(path)))
      assert.are.equal(2, code, err)
      assert.truthy(err:find("ragops: configuração " .. path, 1, true), err)
      assert_ptbr_without_traceback(err)
      assert.are.equal("", out)
      assert_nothing_written()
    end)
  end

  it("SQL empilhado com --dry-run: código 2 ao carregar, nenhuma tabela criada", function()
    local path = HOSTILE .. "/plans/sql_stacked.lua"
    local code, out, err = H.ragops(url, ("run %s --dry-run --config %s"):format(path, LIMITS))
    assert.are.equal(2, code, err)
    assert.truthy(err:find("ragops: plano " .. path .. ":3: fonte \"fortune\": chave \"sql\": a consulta deve ser "
      .. "um único comando SELECT", 1, true), err)
    assert_ptbr_without_traceback(err)
    assert.is_nil(out:find("nada foi gravado", 1, true), out)
    assert.are.equal(0, count(url, "select count(*) from pg_class where relname = 'pwned_dryrun'"))
    assert_nothing_written()
  end)

  -- document() cases: rows dead-lettered with `class`; `code` is the exit.
  local DOCUMENT_CASES = {
    { "doc_infinite_loop.lua", "time", 2, "excedeu o tempo limite de 50 ms (sandbox.hook_ms)" },
    { "doc_allocates.lua", "memory", 2, "excedeu o limite de memória de 8 MiB (sandbox.hook_memory_mb)" },
    { "doc_errors.lua", "transform", 1, "tentativa de indexar a variável local 'meta' (valor nil)" },
    { "doc_escape.lua", "transform", 1, "os.execute não é permitido em planos" },
    { "doc_gsub_recursion.lua", "transform", 1, "string.gsub: chamadas aninhadas demais" },
  }
  for _, case in ipairs(DOCUMENT_CASES) do
    local name, class, exit_code, text = case[1], case[2], case[3], case[4]
    it("document() de " .. name .. ": falhas de classe " .. class .. ", código " .. exit_code, function()
      H.psql(url, "delete from ragops_failures")
      local path = HOSTILE .. "/plans/" .. name
      local code, _, err = H.ragops(url, ("run %s --config %s"):format(path, LIMITS))
      assert.are.equal(exit_code, code, err)
      assert.are.equal(0, count(url, "select count(*) from rag_documents"))
      assert.is_nil(io.open(ESCAPE_MARK, "r"), "document() escapou do sandbox")
      local rows = H.psql(url, "select error_class, message from ragops_failures order by entity_id")
      if exit_code == 2 then
        -- Units of one row: max_breaches = 3, the third breach aborts its unit.
        assert.are.equal(2, #rows)
        assert.truthy(err:find("sandbox.max_breaches = 3", 1, true), err)
      else
        assert.are.equal(5, #rows)
      end
      for _, row in ipairs(rows) do
        assert.are.equal(class, row[1])
        assert.truthy(row[2]:find("document() falhou: plano " .. path .. ":", 1, true), row[2])
        assert.truthy(row[2]:find(text, 1, true), row[2])
        assert.is_nil(row[2]:find("\n", 1, true), row[2])
        assert_ptbr_without_traceback(row[2])
      end
    end)
  end
end)
