#!/usr/bin/env bash
# bench/run.sh: the project benchmark (make bench). Builds Release, starts its
# own throwaway PostgreSQL (fsync off) and embed-servers (--dense, dim 1536) on
# free ports, generates BENCH_DOCS synthetic documents of ~290 characters
# (default 100,000) and measures, on pgvector's vector(1536) when available and
# on real[], in one run:
#
#   0. the CPU cost of decoding one answer of 64 x 1536 per provider dialect
#      (build/ragops-decode-bench: OpenAI base64 and float, Voyage, Ollama,
#      TEI and Cohere rows), in µs per answer and MB/s, no services;
#   1. the limit: binary COPY of the same rows (exported from the table the
#      backfill filled) into the same, empty table (psql \copy from a file);
#   2. cold backfill at 0 ms: docs/s, ratio to (1), the engine's CPU time per
#      document (user + system of the ragops process, GNU time); (2) and (1)
#      alternate BENCH_ROUNDS times (default 2) and each rate is the total
#      over the rounds, as the machine's speed drifts within minutes;
#   3. provider at 200 ms, batch 64, in_flight 8, 16, 32, 64 (BENCH_LAT_DOCS,
#      default BENCH_DOCS, on the first storage): ratio to min(in_flight x 64 / 0.2 s,
#      rate of 2). With few documents the run's fixed costs (start, key census,
#      the last wave) dominate at in_flight 64: 20,000 documents are ~5 waves;
#      the default measures the steady state;
#   4. the seed team's loop (bench/seed_loop.lua: one request of 64 at a time,
#      sleep 0.2 s, row-by-row upserts; BENCH_SEED_DOCS, default 640) as the
#      baseline of (3), with the speed-up over it;
#   5. re-run with nothing changed: ratio to the read limit (binary COPY out of
#      the source columns the plan selects plus the target's keys and hashes),
#      and 0 embedding requests;
#   6. peak RSS of every run (BENCH_DOCS=1000000 is the big run for it).
#
# One table on stdout and the same figures as JSON in BENCH_JSON (default
# bench/resultado.json). Every run is checked (exit code 0; processed,
# embedded, skipped; 0 requests on the re-run): exit 1 if any check fails.
# Each run has a timeout (RAGOPS_BENCH_RUN_TIMEOUT_S, default 600 s). Peak RSS
# and CPU come from GNU time -v (package `time`, installed when root).
# RAGOPS_BENCH_KEEP=1 keeps the work folder (logs, reports) after a failure.
set -euo pipefail

PROG="bench/run.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BIN="$ROOT/build/ragops"
DOCS="${BENCH_DOCS:-100000}"
LAT_DOCS="${BENCH_LAT_DOCS:-$DOCS}"
SEED_DOCS="${BENCH_SEED_DOCS:-640}"
ROUNDS="${BENCH_ROUNDS:-2}"
JSON_OUT="${BENCH_JSON:-$ROOT/bench/resultado.json}"
RUN_TIMEOUT_S="${RAGOPS_BENCH_RUN_TIMEOUT_S:-600}"
LATENCY_MS=200
IN_FLIGHT_LEVELS=(8 16 32 64)
DB_NAME="ragops_bench"

die() { printf '%s: erro: %s\n' "$PROG" "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

for var in DOCS LAT_DOCS SEED_DOCS ROUNDS RUN_TIMEOUT_S; do
  [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var deve ser um inteiro positivo (recebi: ${!var})"
done
((LAT_DOCS > DOCS)) && LAT_DOCS=$DOCS
((SEED_DOCS > DOCS)) && SEED_DOCS=$DOCS
for tool in cmake psql curl luajit timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool não encontrado (rode scripts/deps.sh)"
done
luajit -e 'require "cjson"' 2>/dev/null || die "módulo lua-cjson não encontrado para o luajit (rode scripts/deps.sh)"

# ---------------------------------------------------------------------------
# Cleanup: everything started here is stopped on exit, whatever happens.
# ---------------------------------------------------------------------------
WORK=""
PG_DIR=""
EMBED_PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pidfile
  for pidfile in "${EMBED_PIDS[@]}"; do
    RAGOPS_BIN="$BIN" scripts/embed_server.sh stop "$pidfile" 2>/dev/null || true
  done
  if [[ -n "$PG_DIR" ]]; then
    local real_dir
    real_dir="$(readlink -f "$PG_DIR" 2>/dev/null || true)"
    scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    # pg.sh may have placed the cluster outside WORK (symlink fallback).
    if [[ -n "$real_dir" && "$real_dir" != "$WORK"/* && "$real_dir" == /tmp/ragops-pg-* ]]; then
      rm -rf "$real_dir"
    fi
  fi
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if [[ $rc -ne 0 && -n "${RAGOPS_BENCH_KEEP:-}" ]]; then
      note "pasta de trabalho mantida em $WORK (RAGOPS_BENCH_KEEP)"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
PICKED_PORTS=" "
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints a free TCP port in 19000-19499 not picked before by this script:
# below Linux's ephemeral range (32768-60999), where outgoing connections
# and --port 0 servers take theirs (a port picked there as free was taken
# before the embed-server could listen on it).
pick_port() {
  local i port
  for ((i = 0; i < 200; i++)); do
    port=$((19000 + RANDOM % 500))
    [[ "$PICKED_PORTS" == *" $port "* ]] && continue
    port_in_use "$port" && continue
    PICKED_PORTS+="$port "
    printf '%s\n' "$port"
    return 0
  done
  die "nenhuma porta livre encontrada entre 19000 e 19499"
}

# json_field FILE KEY -> value of a top-level key of a JSON file ("" if absent).
json_field() {
  luajit - "$1" "$2" <<'LUA'
local cjson = require "cjson"
local f = assert(io.open(arg[1]))
local doc = cjson.decode(f:read("*a"))
f:close()
local v = doc[arg[2]]
if v == nil or v == cjson.null then v = "" end
io.write(tostring(v))
LUA
}

# stats_requests PORT -> number of POST /v1/embeddings received since the last reset.
stats_requests() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/stats" | luajit -e '
    local cjson = require "cjson"
    io.write(tostring(cjson.decode(io.read("*a")).requests))'
}

stats_reset() {
  curl -fsS --max-time 5 -X POST "http://127.0.0.1:$1/stats/reset" >/dev/null
}

sql() { psql -X -q -tA -v ON_ERROR_STOP=1 -d "$DATABASE_URL" "$@"; }

TIME_BIN=""
ensure_time() {
  if [[ -n "${RAGOPS_BENCH_NO_GNU_TIME:-}" ]]; then
    note "RAGOPS_BENCH_NO_GNU_TIME definido: pico de memória lido de /proc/PID/status (VmHWM)"
    return
  fi
  if [[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1; then
    TIME_BIN=/usr/bin/time; return
  fi
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    note "instalando o pacote time (GNU time) para medir o pico de memória"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null 2>&1 \
        && /usr/bin/time -v true >/dev/null 2>&1; then
      TIME_BIN=/usr/bin/time; return
    fi
  fi
  note "GNU time indisponível; o pico de memória será lido de /proc/PID/status (VmHWM)"
}

sqlu() { local url="$1"; shift; psql -X -q -tA -v ON_ERROR_STOP=1 -d "$url" "$@"; }

TIME_BIN=""
ensure_time() {
  if [[ -x /usr/bin/time ]] && /usr/bin/time -v true >/dev/null 2>&1; then
    TIME_BIN=/usr/bin/time; return
  fi
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    note "instalando o pacote time (GNU time) para medir CPU e pico de memória"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null 2>&1 \
        && /usr/bin/time -v true >/dev/null 2>&1; then
      TIME_BIN=/usr/bin/time; return
    fi
  fi
  die "GNU time (/usr/bin/time) indisponível: instale o pacote time"
}

# Results: one TSV line per figure, printed as a table and written as JSON.
RESULTS=""
FAILURES=0
add_result() { # scenario storage docs wall_s docs_s ratio bound cpu_us rss_mib requests status
  local IFS=$'\t'
  RESULTS+="$*"$'\n'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "") printf "%.2f", a / b; else print "" }'; }
rate_of() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "" }'; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# Last measured run (set by measure).
M_WALL=""; M_RATE=""; M_CPU_US=""; M_RSS=""; M_REQ=""; M_STATUS=""; M_DOCS=""

# measure LABEL URL CONFIG PLAN EMBED_PORT EXPECT  (EXPECT: cold:N | skip:N)
# Runs `ragops run PLAN` under GNU time with a timeout; sets M_*; checks the report.
measure() {
  local label="$1" url="$2" config="$3" plan="$4" embed_port="$5" expect="$6"
  local tag="run$((RUN_SEQ++))"
  local report="$WORK/$tag.json" timefile="$WORK/$tag.time" errlog="$WORK/$tag.err"
  local rc=0 t0 t1 problem="" processed="" embedded="" skipped=""
  step "$label"
  stats_reset "$embed_port" || die "não foi possível zerar as estatísticas do embed-server (porta $embed_port)"
  t0=$EPOCHREALTIME
  DATABASE_URL="$url" RAGOPS_EMBED_URL="http://127.0.0.1:$embed_port/v1" \
    "$TIME_BIN" -v -o "$timefile" timeout -k 10 "$RUN_TIMEOUT_S" \
    "$BIN" run "$plan" --config "$config" --quiet --report-json "$report" >"$WORK/$tag.out" 2>"$errlog" || rc=$?
  t1=$EPOCHREALTIME
  M_WALL="$(elapsed "$t0" "$t1")"
  M_REQ="$(stats_requests "$embed_port" || echo "?")"
  M_RSS="$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$timefile" 2>/dev/null || true)"
  local cpu_s
  cpu_s="$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.3f", s }' "$timefile" 2>/dev/null || true)"
  if [[ $rc -ne 0 ]]; then
    problem="código de saída $rc$([[ $rc -eq 124 ]] && printf ' (tempo limite de %ss)' "$RUN_TIMEOUT_S")"
  elif [[ ! -s "$report" ]]; then
    problem="relatório JSON não foi gravado"
  else
    processed="$(json_field "$report" processed)"
    embedded="$(json_field "$report" embedded)"
    skipped="$(json_field "$report" skipped)"
    local kind="${expect%%:*}" n="${expect#*:}"
    if [[ "$processed" != "$n" ]]; then
      problem="processados $processed, esperados $n"
    elif [[ "$kind" == cold && "$embedded" != "$n" ]]; then
      problem="embeddings gravados $embedded, esperados $n"
    elif [[ "$kind" == skip && ( "$skipped" != "$n" || "$M_REQ" != 0 ) ]]; then
      problem="inalterados $skipped (esperados $n), pedidos ao provedor $M_REQ (esperado 0)"
    fi
  fi
  M_STATUS="ok"
  if [[ -n "$problem" ]]; then
    M_STATUS="FALHOU"
    FAILURES=$((FAILURES + 1))
    note "$label: $problem; últimas linhas do log:"
    tail -n 15 "$errlog" >&2 2>/dev/null || true
  fi
  M_DOCS="${processed:-0}"
  M_RATE="$(rate_of "$M_DOCS" "$M_WALL")"
  M_CPU_US="$(awk -v c="$cpu_s" -v n="$M_DOCS" 'BEGIN { if (n > 0 && c != "") printf "%.1f", c * 1e6 / n }')"
  note "$label: $M_DOCS docs em $M_WALL s ($M_RATE docs/s), CPU do ragops $M_CPU_US µs/doc, RSS $M_RSS MiB, $M_REQ pedidos [$M_STATUS]"
}
RUN_SEQ=0

# Plan over bench_docs with batch = { size = 64, in_flight = N } and an optional limit.
write_plan() {
  local in_flight="$1" out="$WORK/plan_$1.lua"
  cat > "$out" <<LUA
-- Plano do benchmark: documentos sintéticos gerados por bench/run.sh.
local docs = source "doc" {
  sql = [[select id, corpo, updated_at from bench_docs]],
  key = "id",
  updated_at = "updated_at",
  document = function(row) return { content = row.corpo, metadata = { origem = "bench" } } end,
}

return plan {
  name = "bench",
  sources = { docs },
  batch = { size = 64, in_flight = $in_flight },
  chunking = { max_chars = 2000, overlap = 200 },
  retry = { attempts = 5, base_ms = 500, max_ms = 30000, timeout_s = 60 },
}
LUA
  printf '%s\n' "$out"
}

# Configuration selecting the storage; no provider concurrency limit.
write_config() {
  local storage="$1" out="$WORK/config_${1//[^a-z]/}.lua"
  printf 'return { database = { storage = "%s", pool_size = 8 } }\n' "$storage" > "$out"
  printf '%s\n' "$out"
}

DOC_COLS="entity_type, entity_id, chunk_index, content, content_hash, metadata, embedding, embedding_model, source_updated_at, source_hash"

# copy_limit URL: seconds of a binary COPY of the rows now in rag_documents
# into the same, emptied table (the rows are exported to a file first).
copy_limit() {
  local url="$1" file="$WORK/rows.bin" t0 t1
  sqlu "$url" -c "\\copy (select $DOC_COLS from rag_documents) to '$file' with (format binary)"
  sqlu "$url" -c "truncate rag_documents" -c "checkpoint"
  t0=$EPOCHREALTIME
  sqlu "$url" -c "\\copy rag_documents ($DOC_COLS) from '$file' with (format binary)"
  t1=$EPOCHREALTIME
  rm -f "$file"
  elapsed "$t0" "$t1"
}

# read_limit URL: seconds of a binary COPY out of what a re-run reads: the
# source columns the plan selects and the target's keys and hashes.
read_limit() {
  local url="$1" t0 t1
  t0=$EPOCHREALTIME
  sqlu "$url" -c "\\copy (select id, corpo, updated_at from bench_docs order by id) to '/dev/null' with (format binary)"
  sqlu "$url" -c "\\copy (select entity_type, entity_id, chunk_index, content_hash from rag_documents) to '/dev/null' with (format binary)"
  t1=$EPOCHREALTIME
  elapsed "$t0" "$t1"
}

# Source rows of ~290 characters (words, numbers and hex, like a short record).
load_docs() {
  sqlu "$1" -v rows="$DOCS" <<'SQL'
set client_min_messages = warning;
create table bench_docs (id bigint primary key, corpo text not null, updated_at timestamptz not null);
insert into bench_docs (id, corpo, updated_at)
select g, 'Registro ' || g || ' do acervo de carga: ' || md5(g::text) || ' relatado em '
         || (g % 28 + 1) || '/' || (g % 12 + 1) || ' sobre o assunto ' || md5((g * 31)::text)
         || ', com observações ' || md5((g * 17)::text) || ' e referência cruzada '
         || md5((g * 7)::text) || ' para consulta (cópia ' || substr(md5((g * 3)::text), 1, 20) || ').',
       timestamptz '2024-01-01 00:00:00+00' + (g % 366) * interval '1 day'
  from generate_series(1, :rows) as g;
analyze bench_docs;
SQL
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------
step "compilando (Release) em build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
[[ -x "$BIN" ]] || die "a compilação não gerou $BIN"
ensure_time

WORK="$(mktemp -d /tmp/ragops-bench.XXXXXX)"
chmod 755 "$WORK" # the postgres system user (when we are root) must reach the cluster dir

step "0. decodificação de uma resposta (64 entradas x 1536 dimensões) por dialeto do provedor"
DECODE_JSON="$WORK/decode.json"
if ! "$ROOT/build/ragops-decode-bench" --json "$DECODE_JSON" >"$WORK/decode.txt"; then
  FAILURES=$((FAILURES + 1))
  note "ragops-decode-bench falhou"
  printf '{}\n' > "$DECODE_JSON"
fi
cat "$WORK/decode.txt" >&2
PG_DIR="$WORK/pg"
PG_PORT="$(pick_port)"
EMBED_PORT_0="$(pick_port)"
EMBED_PORT_LAT="$(pick_port)"

step "PostgreSQL descartável (fsync desligado) na porta $PG_PORT"
scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" "$DB_NAME"
ADMIN_URL="$(scripts/pg.sh url "$PG_PORT" "$DB_NAME")"
STORAGES=("real[]")
if PGVECTOR_NOTE="$(scripts/pg.sh pgvector "$PG_PORT" 2>&1 >/dev/null)"; then
  STORAGES=("vector" "real[]")
else
  note "sem pgvector (${PGVECTOR_NOTE##*pgvector ausente: }): só real[]"
fi

step "embed-servers --dense: porta $EMBED_PORT_0 (0 ms) e porta $EMBED_PORT_LAT (${LATENCY_MS} ms)"
EMBED_PIDS+=("$WORK/embed0.pid")
RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed0.pid" "$EMBED_PORT_0" --dim 1536 --dense >/dev/null
EMBED_PIDS+=("$WORK/embed_lat.pid")
RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed_lat.pid" "$EMBED_PORT_LAT" --dim 1536 --dense \
  --latency-ms "$LATENCY_MS" >/dev/null

PLAN_COLD="$(write_plan 8)"
declare -A URL_OF CONFIG_OF COLD_RATE
for storage in "${STORAGES[@]}"; do
  name="${DB_NAME}_${storage//[^a-z]/}"
  sqlu "$ADMIN_URL" -c "create database $name"
  URL_OF[$storage]="$(scripts/pg.sh url "$PG_PORT" "$name")"
  CONFIG_OF[$storage]="$(write_config "$storage")"
  step "$DOCS documentos sintéticos e ragops migrate ($storage)"
  load_docs "${URL_OF[$storage]}"
  DATABASE_URL="${URL_OF[$storage]}" "$BIN" migrate --config "${CONFIG_OF[$storage]}" --quiet >/dev/null
done
AVG_CHARS="$(sqlu "${URL_OF[${STORAGES[0]}]}" -c "select round(avg(length(corpo))) from bench_docs")"
note "armazenamentos: ${STORAGES[*]}; $DOCS documentos de $AVG_CHARS caracteres em média"

# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------
for storage in "${STORAGES[@]}"; do
  url="${URL_OF[$storage]}" config="${CONFIG_OF[$storage]}"
  # ROUNDS pairs of (cold backfill, limit), each right after the other: the
  # machine's speed drifts by tens of percent within minutes, so each rate
  # is the total over the rounds (docs x ROUNDS / summed seconds).
  cold_sum=0 limit_sum=0 cpu_sum=0 cold_rss=0 cold_status="ok"
  for ((round = 1; round <= ROUNDS; round++)); do
    # The same starting point as the limit's COPY (which follows a
    # checkpoint): an empty target, the source vacuumed, nothing left for
    # the checkpointer.
    sqlu "$url" -c "truncate rag_documents" -c "vacuum analyze bench_docs" -c "checkpoint"
    measure "2. backfill frio, 0 ms ($storage, rodada $round de $ROUNDS)" "$url" "$config" "$PLAN_COLD" \
      "$EMBED_PORT_0" "cold:$DOCS"
    [[ "$M_STATUS" == ok ]] || cold_status="$M_STATUS"
    cold_req="$M_REQ"
    read -r cold_sum cpu_sum cold_rss <<< "$(awk -v s="$cold_sum" -v w="$M_WALL" -v c="$cpu_sum" -v u="$M_CPU_US" \
      -v r="$cold_rss" -v m="$M_RSS" 'BEGIN { printf "%.3f %.3f %s", s + w, c + u, (m + 0 > r + 0 ? m : r) }')"
    step "1. limite: COPY binário das mesmas linhas na mesma tabela ($storage, rodada $round de $ROUNDS)"
    limit_sum="$(awk -v s="$limit_sum" -v l="$(copy_limit "$url")" 'BEGIN { printf "%.3f", s + l }')"
  done
  cold_wall="$(awk -v s="$cold_sum" -v n="$ROUNDS" 'BEGIN { printf "%.3f", s / n }')"
  limit_s="$(awk -v s="$limit_sum" -v n="$ROUNDS" 'BEGIN { printf "%.3f", s / n }')"
  cold_rate="$(rate_of "$DOCS" "$cold_wall")" limit_rate="$(rate_of "$DOCS" "$limit_s")"
  cold_cpu="$(awk -v s="$cpu_sum" -v n="$ROUNDS" 'BEGIN { printf "%.1f", s / n }')"
  COLD_RATE[$storage]="$cold_rate"
  add_result "1. limite: COPY binário" "$storage" "$DOCS" "$limit_s" "$limit_rate" "" "" "" "" "" "ok"
  add_result "2. backfill frio, 0 ms" "$storage" "$DOCS" "$cold_wall" "$cold_rate" \
    "$(ratio "$cold_rate" "$limit_rate")" "$limit_rate" "$cold_cpu" "$cold_rss" "$cold_req" "$cold_status"
  # A re-run meets a settled table (the COPY above just rewrote it): hint
  # bits and statistics in place, as for the read limit measured after it.
  sqlu "$url" -c "vacuum analyze rag_documents" -c "checkpoint"
  measure "5. reexecução, nada mudou ($storage)" "$url" "$config" "$PLAN_COLD" "$EMBED_PORT_0" "skip:$DOCS"
  read_s="$(read_limit "$url")"
  read_rate="$(rate_of "$DOCS" "$read_s")"
  add_result "5. limite de leitura: COPY binário para fora" "$storage" "$DOCS" "$read_s" "$read_rate" "" "" "" "" "" "ok"
  add_result "5. reexecução, nada mudou" "$storage" "$M_DOCS" "$M_WALL" "$M_RATE" \
    "$(ratio "$M_RATE" "$read_rate")" "$read_rate" "$M_CPU_US" "$M_RSS" "$M_REQ" "$M_STATUS"
done

# 3 and 4 on the first storage, over the first LAT_DOCS documents.
storage="${STORAGES[0]}" url="${URL_OF[${STORAGES[0]}]}" config="${CONFIG_OF[${STORAGES[0]}]}"
sqlu "$url" -c "create table bench_docs_all as table bench_docs" \
  -c "delete from bench_docs where id > $LAT_DOCS"
for n in "${IN_FLIGHT_LEVELS[@]}"; do
  sqlu "$url" -c "truncate rag_documents" -c "checkpoint"
  measure "3. provedor a ${LATENCY_MS} ms, in_flight $n ($storage)" "$url" "$config" "$(write_plan "$n")" \
    "$EMBED_PORT_LAT" "cold:$LAT_DOCS"
  bound="$(awk -v n="$n" -v ms="$LATENCY_MS" -v c="${COLD_RATE[$storage]}" \
    'BEGIN { b = n * 64 / (ms / 1000); if (c != "" && c < b) b = c; printf "%.0f", b }')"
  add_result "3. provedor ${LATENCY_MS} ms, lotes de 64, in_flight $n" "$storage" "$M_DOCS" "$M_WALL" "$M_RATE" \
    "$(ratio "$M_RATE" "$bound")" "$bound" "$M_CPU_US" "$M_RSS" "$M_REQ" "$M_STATUS"
  eval "LAT_RATE_$n=\$M_RATE"
done

step "4. laço sequencial da equipe (64 por pedido, sleep 0,2 s, upsert linha a linha): $SEED_DOCS documentos"
sqlu "$url" -c "truncate rag_documents"
seed_status="ok"
t0=$EPOCHREALTIME
if ! luajit bench/seed_loop.lua "$url" "http://127.0.0.1:$EMBED_PORT_LAT/v1" "$SEED_DOCS" "$storage" 2>"$WORK/seed.err"; then
  seed_status="FALHOU"; FAILURES=$((FAILURES + 1)); tail -n 5 "$WORK/seed.err" >&2
fi
t1=$EPOCHREALTIME
seed_wall="$(elapsed "$t0" "$t1")"
seed_rows="$(sqlu "$url" -c "select count(*) from rag_documents")"
[[ "$seed_rows" == "$SEED_DOCS" ]] || { seed_status="FALHOU"; FAILURES=$((FAILURES + 1)); }
seed_rate="$(awk -v n="$seed_rows" -v s="$seed_wall" 'BEGIN { printf "%.1f", n / s }')"
add_result "4. laço sequencial da equipe (linha de base)" "$storage" "$seed_rows" "$seed_wall" "$seed_rate" \
  "" "" "" "" "" "$seed_status"
for n in "${IN_FLIGHT_LEVELS[@]}"; do
  r="LAT_RATE_$n"
  add_result "4. ganho sobre a linha de base, in_flight $n" "$storage" "" "" "${!r}" "$(ratio "${!r}" "$seed_rate")" \
    "$seed_rate" "" "" "" "ok"
done

# ---------------------------------------------------------------------------
# Summary: one table, the same figures as JSON.
# ---------------------------------------------------------------------------
printf '\n==> resumo do benchmark (%s, %s núcleos, %s)\n' "$(date '+%Y-%m-%d %H:%M')" "$(nproc)" "$(uname -srm)"
printf 'PostgreSQL 15 local com fsync desligado; embed-server --dense local (dim 1536); lotes de 64;\n'
printf '%s documentos de %s caracteres em média; razão = docs/s ÷ referência (limite ou teto);\n' "$DOCS" "$AVG_CHARS"
printf 'CPU = tempo de CPU (usuário + sistema) do processo ragops por documento; RSS = pico do ragops.\n\n'
printf '%s' "$RESULTS" | awk -F'\t' '
  BEGIN { printf "%-8s %8s %9s %9s %7s %9s %8s %8s %7s %-7s %s\n", "armaz.", "docs", "tempo(s)", "docs/s",
          "razão", "refer.", "CPU µs", "RSS MiB", "pedidos", "status", "cenário" }
  { printf "%-8s %8s %9s %9s %7s %9s %8s %8s %7s %-7s %s\n", $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $1 }'
printf '\n0. custo de CPU da decodificação por dialeto:\n'
cat "$WORK/decode.txt"
printf '%s' "$RESULTS" > "$WORK/results.tsv"
luajit - "$WORK/results.tsv" "$JSON_OUT" "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$(nproc)" "$DOCS" "$AVG_CHARS" \
  "$LATENCY_MS" "$DECODE_JSON" <<'LUA'
local cjson = require "cjson"
local keys = { "scenario", "storage", "docs", "wall_s", "docs_per_s", "ratio", "reference_docs_per_s",
               "cpu_us_per_doc", "peak_rss_mib", "embed_requests", "status" }
local rows = {}
for line in io.lines(arg[1]) do
  local row, i = {}, 0
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    i = i + 1
    row[keys[i]] = tonumber(field) or (field ~= "" and field or nil)
  end
  rows[#rows + 1] = row
end
local decode_file = assert(io.open(arg[8]))
local decode = cjson.decode(decode_file:read("*a"))
decode_file:close()
local out = assert(io.open(arg[2], "w"))
out:write(cjson.encode({ date = arg[3], cores = tonumber(arg[4]), docs = tonumber(arg[5]),
                         avg_chars = tonumber(arg[6]), latency_ms = tonumber(arg[7]), results = rows,
                         decode = decode }), "\n")
out:close()
LUA
printf '\nJSON: %s\nduração total do benchmark: %d s\n' "$JSON_OUT" "$SECONDS"
if [[ $FAILURES -gt 0 ]]; then
  printf '%d medição(ões) falharam; veja as mensagens acima.\n' "$FAILURES"
  exit 1
fi
printf 'todas as medições concluídas com sucesso.\n'
