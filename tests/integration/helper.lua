-- tests/integration/helper.lua: black-box helpers for the integration specs.
-- They run the real `ragops` binary against the real PostgreSQL and
-- embed-server started by tests/run_all.sh (env RAGOPS_BIN, DATABASE_URL,
-- RAGOPS_EMBED_URL, RAGOPS_SOURCE_DIR).
-- Specs that touch the embedding column wrap their tests in H.each_storage, so
-- they run once per storage in RAGOPS_TEST_STORAGES ("real[]", and "vector"
-- when the server has pgvector).
local cjson = require "cjson"

local H = {}

local function need(name)
  local v = os.getenv(name)
  if not v or v == "" then
    error(("variável de ambiente %s ausente: rode os testes com tests/run_all.sh"):format(name), 0)
  end
  return v
end

H.bin = need("RAGOPS_BIN")
H.base_url = need("DATABASE_URL")
H.embed_url = need("RAGOPS_EMBED_URL")
H.source_dir = os.getenv("RAGOPS_SOURCE_DIR") or "."

-- Storages to test on, in order (tests/run_all.sh decides).
H.storages = {}
for storage in (os.getenv("RAGOPS_TEST_STORAGES") or "real[]"):gmatch("%S+") do
  H.storages[#H.storages + 1] = storage
end
-- The storage of the running H.each_storage block (nil outside one), and the
-- configuration file that selects it (passed as --config to ragops).
H.storage = nil
H.storage_config = nil

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.q = shell_quote

local function read_all(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end
H.read_all = read_all

-- Runs a shell command; returns exit code, stdout, stderr.
function H.sh(cmd)
  local out, err = os.tmpname(), os.tmpname()
  local ok, how, code = os.execute(("%s >%s 2>%s"):format(cmd, out, err))
  -- LuaJIT returns the raw wait status as a number.
  local status
  if type(ok) == "number" then
    status = ok % 256 == 0 and math.floor(ok / 256) or 128 + ok % 128
  else
    status = code
  end
  local o, e = read_all(out), read_all(err)
  os.remove(out); os.remove(err)
  return status, o, e
end

-- URL of database `name` on the test server.
function H.db_url(name)
  return (H.base_url:gsub("/[^/]*$", "/" .. name))
end

-- Runs SQL through psql on url; returns the rows as lists of strings.
function H.psql(url, sql)
  local code, out, err = H.sh(("psql -X -q -At -F '|' -v ON_ERROR_STOP=1 -d %s -c %s")
    :format(shell_quote(url), shell_quote(sql)))
  assert(code == 0, "psql falhou: " .. err .. "\nSQL: " .. sql)
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    local cols = {}
    for c in (line .. "|"):gmatch("(.-)|") do cols[#cols + 1] = c end
    rows[#rows + 1] = cols
  end
  return rows
end

-- First column of the first row as a number (or string).
function H.scalar(url, sql)
  local rows = H.psql(url, sql)
  local v = rows[1] and rows[1][1]
  return tonumber(v) or v
end

-- Creates (or recreates) an empty database and returns its URL. Inside
-- H.each_storage the name gets the storage as suffix ("_real", "_vector"), so
-- each storage's databases are its own.
function H.fresh_db(name)
  if H.storage then name = name .. "_" .. H.storage:match("^%a+") end
  local admin = H.db_url("postgres")
  H.psql(admin, ("drop database if exists %s with (force)"):format(name))
  H.psql(admin, ("create database %s"):format(name))
  return H.db_url(name)
end

-- Creates demo-shaped source tables with n_verses synthetic verses and
-- n_fortunes fortunes (some long, to exercise chunking).
function H.load_sources(url, n_verses, n_fortunes)
  H.psql(url, [[
    create table verses(id bigint primary key, book text not null, chapter int not null,
                        verse int not null, text text not null, updated_at timestamptz not null);
    create table fortunes(id bigint primary key, text text not null, updated_at timestamptz not null)]])
  H.psql(url, ([[
    insert into verses
    select i, (array['Gen','Exo','Lev','Num','Deu'])[1 + i %% 5], 1 + i / 30, 1 + i %% 30,
           'And the word ' || md5(i::text) || ' came unto verse ' || i || ' of the book',
           timestamptz '2024-01-01 00:00:00+00' + (i * 7919 %% 366) * interval '1 day'
      from generate_series(1, %d) i]]):format(n_verses))
  H.psql(url, ([[
    insert into fortunes
    select i, case when i %% 10 = 0
                   then repeat('Texto longo número ' || i || ' com pão, ação e coração. ', 120)
                   else 'Quem ' || md5(i::text) || ' não arrisca não petisca ' || i end,
           timestamptz '2024-01-01 00:00:00+00' + (i * 31 %% 366) * interval '1 day'
      from generate_series(1, %d) i]]):format(n_fortunes))
end

-- A fresh database with demo-shaped sources and the engine's tables
-- (`ragops migrate`); returns its URL.
function H.migrated_db(name, n_verses, n_fortunes)
  local url = H.fresh_db(name)
  H.load_sources(url, n_verses, n_fortunes)
  local code, _, err = H.ragops(url, "migrate")
  assert(code == 0, "ragops migrate falhou: " .. err)
  return url
end

-- Environment prefix for running ragops against url.
function H.env(url, extra)
  local parts = { "DATABASE_URL=" .. shell_quote(url), "RAGOPS_EMBED_URL=" .. shell_quote(H.embed_url) }
  for k, v in pairs(extra or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  return table.concat(parts, " ")
end

-- Inside H.each_storage, args plus --config selecting the block's storage
-- (unless args bring their own --config: write it with H.config_file).
local function with_storage(args)
  if not H.storage_config or args:find("--config", 1, true) then return args end
  return args .. " --config " .. shell_quote(H.storage_config)
end

-- Runs `ragops ARGS` against url; returns code, stdout, stderr, report (decoded
-- --report-json when one was asked for with report = true).
function H.ragops(url, args, opts)
  opts = opts or {}
  args = with_storage(args)
  local report_path
  if opts.report then
    report_path = os.tmpname()
    os.remove(report_path)
    args = args .. " --report-json " .. report_path
  end
  local code, out, err = H.sh(("cd %s && env %s %s %s"):format(shell_quote(H.source_dir),
    H.env(url, opts.env), shell_quote(H.bin), args))
  local report
  if report_path then
    local text = read_all(report_path)
    os.remove(report_path)
    if text ~= "" then report = cjson.decode(text) end
  end
  return code, out, err, report
end

-- embed-server request counter (GET /stats).
function H.embed_requests()
  local base = H.embed_url:gsub("/v1/?$", "")
  local code, out = H.sh("curl -fsS " .. shell_quote(base .. "/stats"))
  assert(code == 0, "GET /stats falhou")
  return cjson.decode(out).requests
end

-- Writes a temporary plan file and returns its path.
function H.plan_file(text)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Writes a temporary configuration file whose table has `fields` (Lua text,
-- e.g. [[database = { table = "rag.documentos" }]]) and, unless fields set
-- it, database.storage = the H.each_storage block's storage. Returns its path.
function H.config_file(fields)
  return H.plan_file(([[
local cfg = { %s }
cfg.database = cfg.database or {}
cfg.database.storage = cfg.database.storage or %q
return cfg
]]):format(fields or "", H.storage or "auto"))
end

-- Runs body(storage) inside describe("[storage]") once per storage in
-- H.storages (only = "vector" or "real[]" limits it to that one). Each test
-- run is appended to RAGOPS_TEST_STORAGE_LOG, which tests/run_all.sh counts.
function H.each_storage(body, only)
  -- busted's describe/setup/... live in the spec file's environment.
  local describe, setup, teardown, before_each = (function(env)
    return env.describe, env.setup, env.teardown, env.before_each
  end)(getfenv(2))
  for _, storage in ipairs(H.storages) do
    if only == nil or only == storage then
      describe("[" .. storage .. "]", function()
        setup(function()
          H.storage = storage
          H.storage_config = H.config_file()
        end)
        teardown(function()
          os.remove(H.storage_config)
          H.storage, H.storage_config = nil, nil
        end)
        before_each(function()
          local path = os.getenv("RAGOPS_TEST_STORAGE_LOG")
          local f = path and path ~= "" and io.open(path, "a")
          if f then f:write(storage, "\n"); f:close() end
        end)
        body(storage)
      end)
    end
  end
end

-- The SQL type of the embedding column of `table_name` (default rag_documents).
function H.column_type(url, table_name)
  return H.scalar(url, ([[select format_type(atttypid, atttypmod) from pg_attribute
    where attrelid = '%s'::regclass and attname = 'embedding']]):format(table_name or "rag_documents"))
end

-- Fingerprint of the stored documents, the same on both storages for the same
-- vectors: keys, content hashes and the embedding as real[] text, in key order.
function H.fingerprint(url, table_name)
  return H.scalar(url, ([[select md5(string_agg(entity_type || ':' || entity_id || ':' || chunk_index || ':'
    || content_hash || ':' || md5(embedding::real[]::text), ',' order by entity_type, entity_id, chunk_index))
    from %s]]):format(table_name or "rag_documents"))
end

-- Processes started by a spec; H.cleanup() (after_each) stops what a failed
-- assertion left running.
H.running = {}

function H.cleanup()
  for pid in pairs(H.running) do H.sh("kill -9 " .. pid .. " 2>/dev/null") end
  H.running = {}
end

-- Starts an extra embed-server with fault switches; returns { url, pid, base }.
function H.start_embed_server(flags)
  local log = os.tmpname()
  local cmd = ("%s embed-server --port 0 %s >%s 2>&1 & echo $!"):format(shell_quote(H.bin), flags or "", log)
  local p = io.popen(cmd)
  local pid = p:read("*l")
  p:close()
  for _ = 1, 100 do
    local base = read_all(log):match("escutando em (http://[%d%.:]+)")
    if base then
      H.running[pid] = true
      return { url = base .. "/v1", pid = pid, base = base, log = log }
    end
    H.sh("sleep 0.05")
  end
  error("embed-server não subiu: " .. read_all(log))
end

function H.stop_embed_server(server)
  H.running[server.pid] = nil
  H.sh("kill " .. server.pid .. " 2>/dev/null; sleep 0.1")
  os.remove(server.log)
end

-- Starts ragops in the background; returns { pid (of ragops itself), out,
-- err, code_file }. H.exit_code(job) reads the code once it has ended.
function H.ragops_background(url, args, opts)
  opts = opts or {}
  args = with_storage(args)
  local out, err, pidfile, code = os.tmpname(), os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(code)
  local inner = ("cd %s && env %s %s %s >%s 2>%s & echo $! > %s; wait $!; echo $? > %s")
    :format(shell_quote(H.source_dir), H.env(url, opts.env), shell_quote(H.bin), args, out, err,
            pidfile, code)
  os.execute(("sh -c %s >/dev/null 2>&1 &"):format(shell_quote(inner)))
  local pid
  for _ = 1, 100 do
    pid = read_all(pidfile):match("%d+")
    if pid then break end
    H.sh("sleep 0.02")
  end
  os.remove(pidfile)
  if pid then H.running[pid] = true end
  return { pid = pid, out = out, err = err, code_file = code }
end

function H.exit_code(job, timeout_s)
  for _ = 1, (timeout_s or 180) * 20 do
    local text = read_all(job.code_file):match("%d+")
    if text then
      H.running[job.pid] = nil
      return tonumber(text)
    end
    H.sh("sleep 0.05")
  end
  error("ragops em segundo plano não terminou a tempo")
end

function H.alive(pid)
  return (H.sh("kill -0 " .. pid .. " 2>/dev/null")) == 0
end

-- Waits for a background ragops; returns its exit code (via a wait loop on
-- the pid; the code itself comes from the run status written in the DB).
function H.wait_gone(pid, timeout_s)
  for _ = 1, (timeout_s or 120) * 20 do
    if not H.alive(pid) then return true end
    H.sh("sleep 0.05")
  end
  return false
end

function H.sleep(s) H.sh("sleep " .. s) end

-- Polls fn() every 50 ms until it answers true; raises naming `what` after
-- timeout_s (60) seconds.
function H.wait_for(what, fn, timeout_s)
  for _ = 1, (timeout_s or 60) * 20 do
    if fn() then return end
    H.sleep(0.05)
  end
  error("esperei demais por: " .. what)
end

-- A free loopback TCP port (nothing answers on it now). Seeded once per
-- process: busted does not seed math.random, and the same "random" port in
-- every run would collide with anything a previous run left listening.
local seeded = false
function H.free_port()
  if not seeded then
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
    seeded = true
  end
  -- Below Linux's ephemeral range (32768-60999): a server started with
  -- --port 0, or any outgoing connection, never takes a port from here.
  for _ = 1, 200 do
    local port = 20000 + math.random(0, 9999)
    if H.sh(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) ~= 0 then return port end
  end
  error("nenhuma porta livre em 20000-29999")
end

return H
