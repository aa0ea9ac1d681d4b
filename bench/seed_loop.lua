-- bench/seed_loop.lua: the seed team's loop, as the runbook runs it
-- (manage.py generate_embeddings --batch-size=64 --sleep=0.2), the baseline of
-- the benchmark: one request of 64 texts at a time, then sleep 0.2 s, then one
-- upsert per document, each committed on its own.
-- Usage: luajit bench/seed_loop.lua DATABASE_URL EMBED_URL N STORAGE
local cjson = require "cjson"

local url, embed_url, n, storage = arg[1], arg[2], tonumber(arg[3]), arg[4]
assert(url and embed_url and n and storage, "uso: luajit bench/seed_loop.lua DATABASE_URL EMBED_URL N STORAGE")

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sql_quote(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end

-- The first n source rows, in key order.
local function read_rows()
  local rows = {}
  local p = assert(io.popen(("psql -X -At -F '\t' -d %s -c %s"):format(shell_quote(url),
    shell_quote("select id, corpo from bench_docs order by id limit " .. n))))
  for line in p:lines() do
    local id, text = line:match("^([^\t]*)\t(.*)$")
    rows[#rows + 1] = { id = id, text = text }
  end
  assert(p:close(), "falha ao ler bench_docs")
  return rows
end

-- One POST /embeddings of texts; returns the vectors.
local function embed(texts)
  local body = os.tmpname()
  local f = assert(io.open(body, "w"))
  f:write(cjson.encode({ model = "ragops-hash-1536", input = texts, encoding_format = "float" }))
  f:close()
  local p = assert(io.popen(("curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @%s %s")
    :format(shell_quote(body), shell_quote(embed_url .. "/embeddings"))))
  local answer = p:read("*a")
  p:close()
  os.remove(body)
  local vectors = {}
  for i, item in ipairs(cjson.decode(answer).data) do vectors[i] = item.embedding end
  return vectors
end

local function vector_literal(v)
  if storage == "vector" then return sql_quote("[" .. table.concat(v, ",") .. "]") .. "::vector" end
  return sql_quote("{" .. table.concat(v, ",") .. "}") .. "::real[]"
end

local rows = read_rows()
local db = assert(io.popen(("psql -X -q -v ON_ERROR_STOP=1 -d %s >/dev/null"):format(shell_quote(url)), "w"))
for first = 1, #rows, 64 do
  local batch, texts = {}, {}
  for i = first, math.min(first + 63, #rows) do
    batch[#batch + 1] = rows[i]
    texts[#texts + 1] = rows[i].text
  end
  local vectors = embed(texts)
  os.execute("sleep 0.2")
  for i, row in ipairs(batch) do
    db:write(([[insert into rag_documents (entity_type, entity_id, chunk_index, content, content_hash,
        metadata, embedding, embedding_model)
      values ('doc', %s, 0, %s, md5(%s), '{}', %s, 'ragops-hash-1536')
      on conflict (entity_type, entity_id, chunk_index) do update set content = excluded.content,
        content_hash = excluded.content_hash, embedding = excluded.embedding, indexed_at = now();
]]):format(sql_quote(row.id), sql_quote(row.text), sql_quote(row.text), vector_literal(vectors[i])))
  end
end
assert(db:close(), "psql falhou nos upserts")
