-- ragops.provider.batch: the client of the provider's Batch API (OpenAI's
-- files and batches; Azure OpenAI's global batch, the same shape under
-- {url}/openai with ?api-version=, or the v1 route {url}/openai/v1), as
-- every command uses it: upload a JSONL part (multipart, purpose=batch),
-- find a file by its name or a batch by its input file (to resume without
-- uploading or creating twice), create, get, cancel, download a result
-- file. Every call goes through the provider retry policy
-- (ragops.provider.retry); a retried upload or create first looks for what
-- the failed attempt may have made. Answers are bounded (MAX_OBJECT_BYTES,
-- MAX_LIST_BYTES, the caller's max_bytes). Failures are nil, a pt-BR
-- message without secrets (registered with ragops.util.scrub) and a kind:
--   "fatal"          credential or configuration refused: 401/403, a list
--                    or upload route that does not exist (404), a redirect,
--                    a URL that cannot be used; a 401/403 names the key's
--                    variable
--   "refused"        the provider refused the request (other 4xx; a 429 on
--                    create after the waits), its error.message and
--                    error.code kept
--   "not_found"      the batch or file does not exist (404 on get, cancel,
--                    download; create's input file)
--   "unreachable"    connection errors, timeouts, 5xx (and 429 elsewhere)
--                    after the policy gave up
--   "invalid_answer" a 2xx whose JSON is not what the API answers
--   "cancelled"      the run is stopping (the scheduler was stopped)
--   and those of http.upload/http.download: "file", "file_too_large",
--   "exists", "body_too_large".
-- api.endpoint is the route batches run against ("/v1/embeddings"; Azure's
-- classic route "/embeddings"): create's `endpoint` and the `url` of every
-- JSONL line.
local cjson = require "cjson"
local dialects = require "ragops.provider.dialects"
local url = require "ragops.provider.dialects.url"
local proxy = require "ragops.provider.proxy"
local retry = require "ragops.provider.retry"
local exit = require "ragops.util.exit"
local scrub = require "ragops.util.scrub"
local has_http, http = pcall(require, "ragops.http")

local M = {}

M.MAX_OBJECT_BYTES = 1024 * 1024     -- a file or batch object
M.MAX_LIST_BYTES = 16 * 1024 * 1024  -- a page of a list
M.MAX_PAGES = 10                     -- pages of GET /batches read by find_batch
M.BATCH_PAGE = 100                   -- batches per page (the API's maximum)
M.MAX_PROVIDER_TEXT = 512            -- bytes of the provider's error message kept
M.DEFAULT_TIMEOUT_S = 60             -- a JSON call without provider.timeout_s
-- Statuses of a batch that will never give results: a retried create does
-- not take such a batch of the same file as the one its failed attempt made.
M.DEAD = { failed = true, expired = true, cancelling = true, cancelled = true }
-- Kinds of failures the operator must fix (a key, a URL, a model, a limit
-- or a part file refused): exit 2; the others may come back: exit 4.
M.OPERATOR_KINDS = { fatal = true, refused = true, usage = true, file_too_large = true }

-- The exit code of a failure of kind (ragops.util.exit): usage (2) for the
-- operator's kinds, unreachable (4) for the rest. Every command maps here.
function M.exit_code(kind)
  return M.OPERATOR_KINDS[kind] and exit.usage or exit.unreachable
end

local function has_batch_api(api) return api == "openai" or api == "azure" end

-- Base URL, api-version (or nil) and the endpoint batches run against.
local function base_of(provider)
  if provider.api == "openai" then return url.join(provider.url, ""), nil, "/v1/embeddings" end
  if provider.api_version then return url.join(provider.url, "/openai"), provider.api_version, "/embeddings" end
  return url.join(provider.url, "/openai/v1"), nil, "/v1/embeddings"
end

local Api = {}
Api.__index = Api

-- The client of provider's Batch API, or nil, pt-BR err, "usage" when its
-- dialect has none. opts: policy (the provider retry policy), sched
-- (sleep/now/stopped; sched.real() by default), on_retry (optional).
function M.new(provider, opts)
  opts = opts or {}
  if not has_batch_api(provider.api) then
    return nil, ("o dialeto %s não tem API de lotes: embed.mode = \"batch\" exige provider.api "
      .. "\"openai\" ou \"azure\""):format(tostring(provider.api)), "usage"
  end
  assert(opts.policy, "batch.new: opts.policy (a política de novas tentativas do provedor) é obrigatória")
  scrub.register(provider.api_key)
  for _, value in pairs(provider.headers or {}) do scrub.register(value) end
  local base, api_version, endpoint = base_of(provider)
  local headers, json_headers = dialects.headers(provider), dialects.headers(provider)
  json_headers["Content-Type"] = "application/json"
  return setmetatable({
    provider = provider, base = base, api_version = api_version, endpoint = endpoint,
    headers = headers, json_headers = json_headers, key_env = dialects.key_env(provider),
    policy = opts.policy, sched = opts.sched or require("ragops.util.sched").real(), on_retry = opts.on_retry,
    gate = opts.gate,
    timeout_ms = (provider.timeout_s or M.DEFAULT_TIMEOUT_S) * 1000,
  }, Api)
end

-- "API de lotes da openai em http://host:port/v1" (no credentials, no query).
function Api:describe()
  local via = proxy.describe(self.base, self.provider.proxy)
  return ("API de lotes da %s em %s%s"):format(self.provider.api, proxy.display(self.base),
    via and (" " .. via) or "")
end

-- The URL of path under the base, with api-version and params ({ name, value } ...).
function Api:route(path, params)
  local out = url.join(self.base, path)
  if self.api_version then out = url.with_query(out, "api-version", self.api_version) end
  for _, p in ipairs(params or {}) do out = url.with_query(out, p[1], p[2]) end
  return out
end

-- ---------- failures ----------

-- "mensagem (código c)" of an OpenAI-style error body, masked and capped; "" when none.
local function provider_text(body)
  local ok, decoded = pcall(cjson.decode, body or "")
  local e = ok and type(decoded) == "table" and decoded.error
  if type(e) ~= "table" then e = ok and type(decoded) == "table" and decoded or {} end
  local message = type(e.message) == "string" and e.message or nil
  local code = (type(e.code) == "string" or type(e.code) == "number") and tostring(e.code) or nil
  if not (message or code) then return "" end
  local text = (message or "") .. (code and ((message and " " or "") .. "(código " .. code .. ")") or "")
  return ": " .. scrub.escape(scrub.cap(scrub.mask(text), M.MAX_PROVIDER_TEXT))
end

-- "falha ao <what> na API de lotes ...: <detail>", masked.
function Api:failure(what, detail)
  return scrub.mask(("falha ao %s na %s: %s"):format(what, self:describe(), detail))
end

-- nil, err, info of a non-2xx answer to spec ({ what, on_404, on_429 }).
function Api:status_failure(spec, status, body, retry_after_ms)
  local detail = ("HTTP %d%s"):format(status, provider_text(body))
  local info = { status = status, retry_after_ms = retry_after_ms }
  if status == 401 or status == 403 then
    info.class, info.kind = "fatal", "fatal"
    detail = ("%s; a credencial vem de provider.api_key ou da variável %s"):format(detail, tostring(self.key_env))
  elseif status < 400 then -- a redirect (not followed): the URL is not the API's
    info.class, info.kind = "fatal", "fatal"
    detail = detail .. "; a API respondeu com um redirecionamento: confira provider.url"
  elseif status == 404 then
    info.kind = spec.on_404 or "not_found"
    info.class = info.kind == "fatal" and "fatal" or "permanent"
    if info.kind == "fatal" then detail = detail .. "; a rota não existe: confira provider.url e provider.api" end
  elseif status == 429 or status == 408 or status >= 500 then
    info.class, info.kind = "transient", status == 429 and spec.on_429 or "unreachable"
  else
    info.class, info.kind = "permanent", "refused"
  end
  return nil, self:failure(spec.what, detail), info
end

-- nil, err, info of a transfer that failed (http's kinds; nil kind: interrupted).
function Api:transfer_failure(spec, err, kind)
  if kind == nil and err == retry.INTERRUPTED then return nil, err, { class = "cancelled", kind = "cancelled" } end
  local info = { class = "permanent", kind = kind }
  if kind == "timeout" or kind == "transport" then
    info.class, info.kind = "transient", "unreachable"
  elseif kind == "start" or kind == nil then
    info.class, info.kind = "fatal", "fatal"
  end
  local via = proxy.describe(self.base, self.provider.proxy)
  return nil, self:failure(spec.what, tostring(err) .. (via and (" (" .. via .. ")") or "")), info
end

-- The decoded 2xx body when spec.check accepts it, else nil, err, info ("invalid_answer").
function Api:decoded(spec, body)
  local ok, decoded = pcall(cjson.decode, body)
  if ok and type(decoded) == "table" and spec.check(decoded) then return decoded end
  return nil, self:failure(spec.what, "resposta HTTP 2xx que não é o objeto JSON esperado da API de lotes"),
    { class = "permanent", kind = "invalid_answer" }
end

-- ---------- one attempt ----------

-- One JSON call: spec = { what, method, url, body, max_bytes, check, on_404, on_429 }.
function Api:attempt(spec)
  local resp, err, kind = http.request {
    method = spec.method or "GET", url = spec.url, body = spec.body,
    headers = spec.body and spec.body ~= "" and self.json_headers or self.headers,
    timeout_ms = self.timeout_ms, max_body_bytes = spec.max_bytes or M.MAX_OBJECT_BYTES,
    ca_file = self.provider.ca_file, proxy = self.provider.proxy,
  }
  if not resp then return self:transfer_failure(spec, err, kind) end
  if resp.status < 200 or resp.status >= 300 then
    return self:status_failure(spec, resp.status, resp.body, resp.retry_after_ms)
  end
  return self:decoded(spec, resp.body)
end

-- fn through the retry policy: its result, or nil, err, kind. With a gate
-- (the run's endpoint: ragops.provider.endpoints gate), each attempt is one
-- request of the endpoint's shared quota, and its Retry-After pauses it.
function Api:call(fn)
  local gate, attempt = self.gate, fn
  if gate then
    attempt = function(...)
      local pass = gate:enter()
      local result, err, info = fn(...)
      gate:leave(pass, info and info.status or (result ~= nil and 200) or 0, info and info.retry_after_ms)
      return result, err, info
    end
  end
  local result, err, info = retry.call(self.policy, self.sched, attempt, self.on_retry)
  if result ~= nil then return result end
  info = info or {}
  return nil, err, info.kind or (info.class == "cancelled" and "cancelled") or "unreachable"
end

-- A batch object with JSON null *_file_id fields as nil.
local function batch_of(obj)
  for key, value in pairs(obj) do
    if value == cjson.null and type(key) == "string" and key:find("_file_id$") then obj[key] = nil end
  end
  return obj
end

local function is_batch(obj) return type(obj.id) == "string" and type(obj.status) == "string" end
local function is_file(obj) return type(obj.id) == "string" end
local function is_list(obj) return type(obj.data) == "table" end

-- ---------- lists ----------

-- One pass over the pages of a list (single attempts): the first item
-- match accepts (pick, when given, chooses among the page's items), false
-- when none, or nil, err, info.
function Api:scan(what, path, params, match)
  local after
  for _ = 1, M.MAX_PAGES do
    local query = { unpack(params) }
    if after then query[#query + 1] = { "after", after } end
    local page, err, info = self:attempt({ what = what, url = self:route(path, query), max_bytes = M.MAX_LIST_BYTES,
                                           check = is_list, on_404 = "fatal" })
    if not page then return nil, err, info end
    for _, item in ipairs(page.data) do
      if type(item) == "table" and match(item) then return item end
    end
    local last = page.data[#page.data]
    if page.has_more ~= true or type(last) ~= "table" or type(last.id) ~= "string" then return false end
    after = type(page.last_id) == "string" and page.last_id or last.id
  end
  return false
end

-- The newest input file called filename (optionally of size bytes) or false; nil, err, info.
function Api:newest_file(filename, bytes)
  return self:scan("listar os arquivos de lote", "/files", { { "purpose", "batch" } }, function(f)
    return f.filename == filename and (bytes == nil or f.bytes == bytes)
  end)
end

-- The newest batch whose input is file_id (accept(batch) also true) or false; nil, err, info.
function Api:first_batch(file_id, accept)
  return self:scan("listar os lotes", "/batches", { { "limit", M.BATCH_PAGE } }, function(b)
    return b.input_file_id == file_id and (accept == nil or accept(b))
  end)
end

-- The id of the newest input file called filename, false when there is none.
function Api:find_file(filename)
  local f, err, kind = self:call(function() return self:newest_file(filename) end)
  if f == nil then return nil, err, kind end
  return f and f.id
end

-- The newest batch (at most MAX_PAGES pages back) whose input is file_id, false when none.
function Api:find_batch(file_id)
  local b, err, kind = self:call(function() return self:first_batch(file_id) end)
  if b == nil then return nil, err, kind end
  return b and batch_of(b)
end

-- ---------- files ----------

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  f:close()
  return size
end

-- After info, a failure whose outcome is unknown (no answer, a timeout, a
-- 5xx): the provider may have done what was asked.
local function uncertain(info)
  return info ~= nil and info.class == "transient" and info.status ~= 429
end

-- One upload attempt; after an uncertain failure, the file that attempt
-- may have stored (same name and size) is taken instead of sending again.
function Api:upload_attempt(spec, last, path, filename, max_bytes)
  if uncertain(last) then
    local found, err, info = self:newest_file(filename, file_size(path))
    if found == nil then return nil, err, info end
    if found then return found.id end
  end
  local resp, err, kind = http.upload {
    url = spec.url, headers = self.headers, fields = { purpose = "batch" }, file_field = "file", path = path,
    filename = filename, content_type = "application/jsonl", max_file_bytes = max_bytes,
    max_body_bytes = M.MAX_OBJECT_BYTES, ca_file = self.provider.ca_file, proxy = self.provider.proxy,
  }
  if not resp then return self:transfer_failure(spec, err, kind) end
  if resp.status < 200 or resp.status >= 300 then
    return self:status_failure(spec, resp.status, resp.body, resp.retry_after_ms)
  end
  local file, derr, dinfo = self:decoded(spec, resp.body)
  return file and file.id, derr, dinfo
end

-- Uploads the JSONL at path as filename (purpose=batch): its file id.
function Api:upload(path, filename, max_bytes)
  local spec = { what = ("enviar o arquivo de lote %s"):format(filename), url = self:route("/files"),
                 check = is_file, on_404 = "fatal" }
  local last
  return self:call(function()
    local id, err, info = self:upload_attempt(spec, last, path, filename, max_bytes)
    last = info
    return id, err, info
  end)
end

-- Downloads file_id's content into path (a new file): the bytes written.
function Api:download(file_id, path, max_bytes)
  local spec = { what = ("baixar o arquivo %s"):format(file_id) }
  local target = self:route("/files/" .. url.encode(file_id) .. "/content")
  return self:call(function()
    local resp, err, kind = http.download {
      url = target, headers = self.headers, path = path, max_bytes = max_bytes,
      ca_file = self.provider.ca_file, proxy = self.provider.proxy,
    }
    if not resp then return self:transfer_failure(spec, err, kind) end
    if resp.bytes == nil then return self:status_failure(spec, resp.status, resp.body, resp.retry_after_ms) end
    return resp.bytes
  end)
end

-- ---------- batches ----------

-- Creates the batch of file_id (endpoint self.endpoint, window 24h,
-- metadata optional). After an uncertain failure, a retry first takes the
-- live batch of file_id the failed attempt may have created.
function Api:create(file_id, metadata)
  local spec = { what = ("criar o lote do arquivo %s"):format(file_id), method = "POST", url = self:route("/batches"),
                 check = is_batch, on_404 = "not_found", on_429 = "refused",
                 body = cjson.encode({ input_file_id = file_id, endpoint = self.endpoint,
                                       completion_window = "24h", metadata = metadata }) }
  local last
  local batch, err, kind = self:call(function()
    local found, ferr, info = false, nil, nil
    if uncertain(last) then
      found, ferr, info = self:first_batch(file_id, function(b) return not M.DEAD[b.status] end)
    end
    if found == false then found, ferr, info = self:attempt(spec) end
    last = info
    return found, ferr, info
  end)
  if not batch then return nil, err, kind end
  return batch_of(batch)
end

-- The batch batch_id as the provider sees it now.
function Api:get(batch_id)
  local spec = { what = ("consultar o lote %s"):format(batch_id), check = is_batch,
                 url = self:route("/batches/" .. url.encode(batch_id)) }
  local batch, err, kind = self:call(function() return self:attempt(spec) end)
  if not batch then return nil, err, kind end
  return batch_of(batch)
end

-- Asks the provider to cancel batch_id (it goes through cancelling).
function Api:cancel(batch_id)
  local spec = { what = ("cancelar o lote %s"):format(batch_id), method = "POST", body = "", check = is_batch,
                 url = self:route("/batches/" .. url.encode(batch_id) .. "/cancel") }
  local batch, err, kind = self:call(function() return self:attempt(spec) end)
  if not batch then return nil, err, kind end
  return batch_of(batch)
end

M.base_of = base_of -- for the unit spec
M.has_http = has_http

return M
