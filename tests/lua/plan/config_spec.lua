-- config_spec.lua: configuration defaults, file loading, env overrides,
-- validation errors and redaction of secrets.

local config = require "ragops.plan.config"

local written = {}

local function config_file(text)
  local path = os.tmpname() .. "_config.lua"
  local handle = assert(io.open(path, "wb"))
  handle:write(text)
  handle:close()
  written[#written + 1] = path
  return path
end

-- env_getter over a fixed table (never the real environment).
local function env_of(values)
  return function(name) return values[name] end
end
local NO_ENV = env_of({})

local function escape(text)
  return (text:gsub("%p", "%%%0"))
end

teardown(function()
  for _, path in ipairs(written) do os.remove(path) end
end)

describe("config.load", function()
  it("returns the defaults without a file", function()
    local cfg, err = config.load(nil, NO_ENV)
    assert.is_nil(err)
    assert.same({ url = "postgresql://localhost/ragops", pool_size = 8, table = "rag_documents", storage = "auto" },
      cfg.database)
    assert.equal("http://127.0.0.1:8080/v1", cfg.provider.url)
    assert.equal("ragops-hash-1536", cfg.provider.model)
    assert.equal(1536, cfg.provider.dim)
    assert.is_nil(cfg.provider.dimensions)
    assert.is_nil(cfg.provider.api_key)
    assert.equal("base64", cfg.provider.encoding)
    assert.equal(60, cfg.provider.timeout_s)
    assert.equal(0.02, cfg.provider.price_per_1m_tokens["text-embedding-3-small"])
    assert.equal(0.13, cfg.provider.price_per_1m_tokens["text-embedding-3-large"])
    assert.equal(0, cfg.provider.price_per_1m_tokens["ragops-hash-1536"])
    assert.same({}, cfg.provider.rate_limits) -- no provider limit: batch.in_flight rules
    assert.is_nil(cfg.metrics.file)
    assert.is_nil(cfg.alerts.webhook_url)
  end)

  it("loads config.example.lua and it matches the defaults", function()
    local cfg, err = config.load("config.example.lua", NO_ENV)
    assert.is_nil(err)
    local defaults = config.load(nil, NO_ENV)
    cfg.file, defaults.file = nil, nil
    assert.same(defaults, cfg)
  end)

  -- config.defaults() is the one definition; the example shows it. Every
  -- key and value of the example is a default, and every default key
  -- (nil-valued ones as `key = nil`) appears in the example.
  describe("config.example.lua mostra os padrões", function()
    local EXAMPLE = "config.example.lua"
    local function example_text()
      local handle = assert(io.open(EXAMPLE, "rb"))
      local text = handle:read("*a")
      handle:close()
      return text
    end
    local function example_table()
      local chunk = assert(loadstring(example_text(), "=" .. EXAMPLE))
      setfenv(chunk, { env = function() return nil end })
      return chunk()
    end
    local function at(t, path)
      for part in path:gmatch("[^%.]+") do
        if type(t) ~= "table" then return nil end
        t = t[part]
      end
      return t
    end
    -- { "path" = value } of every leaf of t (tables recursed).
    local function leaves(t, prefix, out)
      out = out or {}
      for key, value in pairs(t) do
        local path = prefix and (prefix .. "." .. key) or key
        if type(value) == "table" then leaves(value, path, out) else out[path] = value end
      end
      return out
    end

    it("cada chave e valor do exemplo é o padrão", function()
      local defaults = config.defaults()
      for path, value in pairs(leaves(example_table())) do
        assert.are.equal(at(defaults, path), value, "config.example.lua: " .. path)
      end
    end)

    it("cada chave padrão aparece no exemplo", function()
      local defaults, example, text = config.defaults(), example_table(), example_text()
      for section, keys in pairs(config.KEYS) do
        for _, key in ipairs(keys) do
          local path = section == "" and key or (section .. "." .. key)
          if section:find("[]", 1, true) then -- an entry of a list: shown in the example's comment
            assert.truthy(text:find("%-%-.*[{ ]" .. key .. " = "), "config.example.lua sem exemplo de " .. path)
          elseif config.KEYS[path] then -- a section: its keys are checked one by one
          elseif at(defaults, path) ~= nil then
            assert.are.same(at(defaults, path), at(example, path), "config.example.lua: " .. path)
          else
            assert.truthy(text:find("\n%s*" .. key .. " = nil"), "config.example.lua sem " .. path .. " = nil")
          end
        end
      end
    end)
  end)

  it("documents every key in config.example.lua", function()
    local handle = assert(io.open("config.example.lua", "rb"))
    local text = handle:read("*a")
    handle:close()
    for _, key in ipairs({ "url", "pool_size", "table", "storage", "model", "dimensions", "dim", "api_key",
                           "encoding", "timeout_s", "price_per_1m_tokens", "rate_limits", "requests_per_min",
                           "tokens_per_min", "max_concurrency", "file", "webhook_url" }) do
      -- each key is preceded by a comment line
      assert.truthy(text:find("\n%s*%-%-[^\n]*\n%s*" .. key .. " = "), key)
    end
  end)

  it("merges a partial file over the defaults", function()
    local path = config_file([[
return {
  database = { pool_size = 4 },
  provider = { model = "text-embedding-3-large", dimensions = 256,
               rate_limits = { requests_per_min = 3000 },
               price_per_1m_tokens = { ["meu-modelo"] = 0.5 } },
  metrics = { file = "/tmp/ragops.prom" },
}
]])
    local cfg, err = config.load(path, NO_ENV)
    assert.is_nil(err)
    assert.equal(4, cfg.database.pool_size)
    assert.equal("rag_documents", cfg.database.table)
    assert.equal(256, cfg.provider.dimensions)
    assert.equal(256, cfg.provider.dim)
    assert.equal(3000, cfg.provider.rate_limits.requests_per_min)
    assert.is_nil(cfg.provider.rate_limits.max_concurrency)
    assert.equal(0.5, cfg.provider.price_per_1m_tokens["meu-modelo"])
    assert.equal(0.02, cfg.provider.price_per_1m_tokens["text-embedding-3-small"])
    assert.equal(0.13, config.price_per_1m(cfg))
    assert.equal("/tmp/ragops.prom", cfg.metrics.file)
  end)

  it("accepts any positive provider.timeout_s, fractions included", function()
    local cfg, err = config.load(config_file("return { provider = { timeout_s = 1.005 } }"), NO_ENV)
    assert.is_nil(err)
    assert.equal(1.005, cfg.provider.timeout_s)
  end)

  it("accepts every storage, halfvec included (3072 dimensions indexable)", function()
    for _, storage in ipairs({ "auto", "real[]", "vector", "halfvec" }) do
      local cfg, err = config.load(config_file(("return { database = { storage = %q }, provider = { dim = 3072 } }")
        :format(storage)), NO_ENV)
      assert.is_nil(err)
      assert.equal(storage, cfg.database.storage)
    end
  end)

  it("applies environment overrides over the file", function()
    local path = config_file([[return { database = { url = "postgresql://arquivo/db" } }]])
    local cfg = assert(config.load(path, env_of {
      DATABASE_URL = "postgresql://env/db", RAGOPS_EMBED_URL = "https://api.openai.com/v1",
      OPENAI_API_KEY = "sk-test-123456", RAGOPS_EMBED_MODEL = "text-embedding-3-small",
    }))
    assert.equal("postgresql://env/db", cfg.database.url)
    assert.equal("https://api.openai.com/v1", cfg.provider.url)
    assert.equal("sk-test-123456", cfg.provider.api_key)
    assert.equal("text-embedding-3-small", cfg.provider.model)
    -- Empty variables are ignored.
    cfg = assert(config.load(path, env_of { DATABASE_URL = "" }))
    assert.equal("postgresql://arquivo/db", cfg.database.url)
  end)

  it("offers env() and the plans' safe functions inside the file, and nothing else", function()
    local path = config_file([[return { provider = { api_key = env("MINHA_CHAVE") } }]])
    local cfg = assert(config.load(path, env_of { MINHA_CHAVE = "sk-x" }))
    assert.equal("sk-x", cfg.provider.api_key)
    local bad = config_file("local f = io.open('/etc/passwd')\nreturn {}\n")
    local none, err = config.load(bad, NO_ENV)
    assert.is_nil(none)
    assert.equal("configuração " .. bad .. ':1: "io" não é permitido em configurações (ambiente restrito, '
      .. "sem acesso a arquivos, processos ou carregamento de código)", err)
  end)

  it("refuses bytecode and non-table results", function()
    local path = config_file(string.dump(function() return {} end))
    local cfg, err = config.load(path, NO_ENV)
    assert.is_nil(cfg)
    assert.matches("bytecode%) recusado", err)
    local other = config_file("return 42\n")
    cfg, err = config.load(other, NO_ENV)
    assert.is_nil(cfg)
    assert.matches("deve terminar com return { ... } (retornou valor 42)", err, 1, true)
  end)

  local cases = {
    { "database = { pool_size = 0 }", 'chave "database.pool_size": valor 0 inválido; esperado um inteiro entre 1 e 256' },
    { "database = { table = 'rag; drop' }", 'chave "database.table": valor "rag; drop" inválido' },
    { "database = { storage = 'halfvek' }", 'chave "database.storage": valor "halfvek" inválido; esperado um destes: "auto", "real%[%]", "vector", "halfvec"' },
    { "database = { pol_size = 2 }", 'chave "database.pol_size" desconhecida' },
    { "provider = { url = 'localhost:8080' }", 'chave "provider.url": valor "localhost:8080" inválido; esperado uma URL http:// ou https://' },
    { "provider = { dim = 'muitas' }", 'chave "provider.dim": valor "muitas" inválido' },
    { "provider = { dimensions = 256, dim = 1536 }", 'chave "provider.dim": valor 1536 inválido; esperado o mesmo valor de provider.dimensions %(256%)' },
    { "provider = { encoding = 'json' }", 'chave "provider.encoding": valor "json" inválido' },
    { "provider = { timeout_s = -1 }", 'chave "provider.timeout_s": valor %-1 inválido' },
    { "provider = { timeout_s = 0 }", 'chave "provider.timeout_s": valor 0 inválido; esperado um número de segundos maior que 0 e até 3600' },
    { "provider = { timeout_s = 7200 }", 'chave "provider.timeout_s": valor 7200 inválido' },
    { "provider = { timeout_s = '60' }", 'chave "provider.timeout_s": valor "60" inválido' },
    { "provider = { price_per_1m_tokens = { x = -2 } }", 'chave "provider.price_per_1m_tokens.x": valor %-2 inválido' },
    { "provider = { rate_limits = { max_concurrency = 0 } }", 'chave "provider.rate_limits.max_concurrency": valor 0 inválido' },
    { "provider = { rate_limits = { rpm = 10 } }", 'chave "provider.rate_limits.rpm" desconhecida' },
    { "alerts = { webhook_url = 42 }", 'chave "alerts.webhook_url": valor 42 inválido' },
    { "metrics = 'sim'", 'chave "metrics": valor "sim" inválido' },
    { "banco = {}", 'chave "banco" desconhecida' },
  }
  for _, case in ipairs(cases) do
    it("rejects " .. case[1], function()
      local path = config_file("return { " .. case[1] .. " }\n")
      local cfg, err = config.load(path, NO_ENV)
      assert.is_nil(cfg)
      assert.matches("^configuração " .. escape(path) .. ": ", err)
      assert.matches(case[2], err)
    end)
  end

  it("names the environment variable when an override is invalid, without leaking the password", function()
    local cfg, err = config.load(nil, env_of { RAGOPS_EMBED_URL = "ftp://user:hunter2@host/x" })
    assert.is_nil(cfg)
    assert.matches("variável de ambiente RAGOPS_EMBED_URL", err, 1, true)
    assert.matches('chave "provider.url"', err, 1, true)
    assert.is_nil(err:find("hunter2", 1, true))
  end)

  it("never prints the API key in errors", function()
    local path = config_file("return { provider = { api_key = '' } }\n")
    local _, err = config.load(path, NO_ENV)
    assert.matches('chave "provider.api_key"', err, 1, true)
    path = config_file("return { provider = { api_key = 12345678 } }\n")
    _, err = config.load(path, NO_ENV)
    assert.matches('chave "provider.api_key": valor %(oculto%) inválido', err)
    assert.is_nil(err:find("12345678", 1, true))
  end)
end)

describe("config.redact_url", function()
  local cases = {
    { "postgresql://u:s3cret@h/db", "postgresql://u:***@h/db" },
    { "postgresql://u:p@ss/w@h:5432/db", "postgresql://u:***@h:5432/db" },
    { "postgresql://u@h/db", "postgresql://u@h/db" },
    { "postgresql://h/db?sslmode=require&password=zz", "postgresql://h/db?sslmode=require&password=***" },
    { "host=h password=s3cret dbname=x", "host=h password=*** dbname=x" },
    { "host=h password = 's3 cr\\'et' user=u", "host=h password = *** user=u" },
    { "host=h sslpassword=abc", "host=h sslpassword=***" },
    { "https://x.openai.azure.com/v1?api-key=abc&v=1", "https://x.openai.azure.com/v1?api-key=***&v=1" },
    { "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1" },
  }
  for _, case in ipairs(cases) do
    it(case[1], function()
      assert.equal(case[2], config.redact_url(case[1]))
    end)
  end

  it("leaves non-strings alone", function()
    assert.is_nil(config.redact_url(nil))
  end)
end)

describe("config.describe", function()
  it("is pt-BR, complete and never shows secrets", function()
    local path = config_file([[
return { database = { url = "postgresql://app:TopSecretPw@db.interno:5432/prod" },
         alerts = { webhook_url = "https://hooks.slack.com/services/T000/B000/XXXXSEGREDO" },
         metrics = { file = "/var/lib/node_exporter/ragops.prom" } }
]])
    local cfg = assert(config.load(path, env_of { OPENAI_API_KEY = "sk-proj-SUPERSECRET" }))
    local lines = config.describe(cfg)
    local text = table.concat(lines, "\n")
    assert.is_nil(text:find("TopSecretPw", 1, true))
    assert.is_nil(text:find("sk-proj-SUPERSECRET", 1, true))
    assert.is_nil(text:find("XXXXSEGREDO", 1, true))
    assert.truthy(text:find("postgresql://app:***@db.interno:5432/prod", 1, true))
    assert.truthy(text:find("chave de API: definida (oculta)", 1, true))
    assert.truthy(text:find("webhook https://hooks.slack.com/***", 1, true))
    assert.truthy(text:find("arquivo /var/lib/node_exporter/ragops.prom", 1, true))
    assert.truthy(text:find("modelo ragops-hash-1536, dimensão 1536", 1, true))
    assert.truthy(text:find("preço: US$ 0 por 1 milhão de tokens", 1, true))
  end)

  it("hides a password even in a conninfo string and says when no key is set", function()
    local cfg = assert(config.load(nil, env_of { DATABASE_URL = "host=db user=app password=Pw123456 dbname=x" }))
    local text = table.concat(config.describe(cfg), "\n")
    assert.is_nil(text:find("Pw123456", 1, true))
    assert.truthy(text:find("chave de API: não definida", 1, true))
    assert.truthy(text:find("sem limite", 1, true))
  end)
end)
