#!/usr/bin/env bash
# bench/run.sh: the project benchmark (make bench). Builds Release, starts its
# own throwaway PostgreSQL (fsync off) and embed-servers on free ports, loads
# the demo data and measures ragops runs, printing a pt-BR table:
#
#   1. cold backfill of the 33,608 demo documents, provider at 0 ms
#   2. re-run with nothing changed (the skip path)
#   3. cold backfill with the provider at 50 ms, batch.in_flight = 1, 4, 16
#   4. scale: cold backfill of N synthetic rows (RAGOPS_BENCH_SCALE_ROWS,
#      default 300000; 0 skips it), provider at 0 ms
#
# pgvector is used when installed (scripts/pg.sh pgvector runs
# ../shared/pgvector/install.sh when there and root); the summary says which
# storage the embedding column had.
# Every run is checked (exit code 0, processed/embedded/skipped counts); the
# script exits 1 if any check fails. Everything it starts is stopped on exit.
# Bounded in time: each run has a timeout (RAGOPS_BENCH_RUN_TIMEOUT_S, default
# 180 s, never past the budget + 60 s) and the optional scale step is skipped
# when the total budget (RAGOPS_BENCH_BUDGET_S, default 540 s) is short.
# Peak RSS comes from GNU time -v (package `time`, installed when root), or
# from polling /proc/PID/status VmHWM (forced by RAGOPS_BENCH_NO_GNU_TIME=1).
# RAGOPS_BENCH_KEEP=1 keeps the work folder (logs, reports) after a failure.
set -euo pipefail

PROG="bench/run.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BIN="$ROOT/build/ragops"
DEMO_DOCS=33608
SCALE_ROWS="${RAGOPS_BENCH_SCALE_ROWS:-300000}"
BUDGET_S="${RAGOPS_BENCH_BUDGET_S:-540}"
RUN_TIMEOUT_S="${RAGOPS_BENCH_RUN_TIMEOUT_S:-180}"
LATENCY_MS=50
IN_FLIGHT_LEVELS=(1 4 16)
DB_NAME="ragops_bench"

die() { printf '%s: erro: %s\n' "$PROG" "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

[[ "$SCALE_ROWS" =~ ^[0-9]+$ ]] || die "RAGOPS_BENCH_SCALE_ROWS deve ser um inteiro (recebi: $SCALE_ROWS)"
[[ "$BUDGET_S" =~ ^[0-9]+$ ]] || die "RAGOPS_BENCH_BUDGET_S deve ser um inteiro (recebi: $BUDGET_S)"
[[ "$RUN_TIMEOUT_S" =~ ^[0-9]+$ ]] || die "RAGOPS_BENCH_RUN_TIMEOUT_S deve ser um inteiro (recebi: $RUN_TIMEOUT_S)"
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

# Prints a free TCP port in 56000-56499 not picked before by this script.
pick_port() {
  local i port
  for ((i = 0; i < 200; i++)); do
    port=$((56000 + RANDOM % 500))
    [[ "$PICKED_PORTS" == *" $port "* ]] && continue
    port_in_use "$port" && continue
    PICKED_PORTS+="$port "
    printf '%s\n' "$port"
    return 0
  done
  die "nenhuma porta livre encontrada entre 56000 e 56499"
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

# Results, one entry per measured run (parallel arrays, index = run number).
R_LABEL=(); R_DOCS=(); R_WALL=(); R_RATE=(); R_RSS=(); R_REQ=(); R_STATUS=()
FAILURES=0

fmt_mib() { awk -v kb="$1" 'BEGIN { if (kb == "") print "?"; else printf "%.1f", kb / 1024 }'; }

# measure LABEL PLAN EMBED_PORT EXPECT  (EXPECT: cold:N | skip:N)
# Runs `ragops run PLAN` against the embed-server on EMBED_PORT with a timeout,
# records wall time, peak RSS, embed requests, and checks the report.
measure() {
  local label="$1" plan="$2" embed_port="$3" expect="$4"
  local tag="run${#R_LABEL[@]}"
  local report="$WORK/$tag.json" timefile="$WORK/$tag.time" errlog="$WORK/$tag.err"
  local rc=0 rss="" t0 t1 limit
  # Hard bound: never run past the total budget plus one minute of slack.
  limit=$((BUDGET_S + 60 - SECONDS))
  ((limit > RUN_TIMEOUT_S)) && limit=$RUN_TIMEOUT_S
  ((limit < 30)) && limit=30
  step "$label"
  stats_reset "$embed_port" || die "não foi possível zerar as estatísticas do embed-server (porta $embed_port)"
  export RAGOPS_EMBED_URL="http://127.0.0.1:$embed_port/v1"
  t0=$EPOCHREALTIME
  if [[ -n "$TIME_BIN" ]]; then
    "$TIME_BIN" -v -o "$timefile" timeout -k 10 "$limit" \
      "$BIN" run "$plan" --quiet --report-json "$report" >"$WORK/$tag.out" 2>"$errlog" || rc=$?
    t1=$EPOCHREALTIME
    rss="$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$timefile" 2>/dev/null || true)"
  else
    timeout -k 10 "$limit" "$BIN" run "$plan" --quiet --report-json "$report" \
      >"$WORK/$tag.out" 2>"$errlog" &
    local pid=$! child="" hwm
    while kill -0 "$pid" 2>/dev/null; do
      [[ -z "$child" ]] && child="$(pgrep -P "$pid" 2>/dev/null | head -n 1 || true)"
      if [[ -n "$child" ]]; then
        hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$child/status" 2>/dev/null || true)"
        [[ -n "$hwm" ]] && rss="$hwm"
      fi
      sleep 0.05
    done
    wait "$pid" || rc=$?
    t1=$EPOCHREALTIME
  fi
  local wall requests processed="" embedded="" skipped="" status="ok" problem=""
  wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
  requests="$(stats_requests "$embed_port" || echo "?")"
  if [[ $rc -ne 0 ]]; then
    problem="código de saída $rc$([[ $rc -eq 124 ]] && printf ' (tempo limite de %ss)' "$limit")"
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
    elif [[ "$kind" == skip && ( "$skipped" != "$n" || "$requests" != 0 ) ]]; then
      problem="inalterados $skipped (esperados $n), pedidos ao provedor $requests (esperado 0)"
    fi
  fi
  if [[ -n "$problem" ]]; then
    status="FALHOU"
    FAILURES=$((FAILURES + 1))
    note "$label: $problem; últimas linhas do log:"
    tail -n 15 "$errlog" >&2 2>/dev/null || true
  fi
  local docs="${processed:-0}" rate
  rate="$(awk -v n="$docs" -v s="$wall" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "?" }')"
  R_LABEL+=("$label"); R_DOCS+=("$docs"); R_WALL+=("$wall"); R_RATE+=("$rate")
  R_RSS+=("$(fmt_mib "$rss")"); R_REQ+=("$requests"); R_STATUS+=("$status")
  note "$label: ${docs} docs em ${wall} s (${rate} docs/s), pico de RSS $(fmt_mib "$rss") MiB, ${requests} pedidos de embedding [$status]"
}

# Copy of plans/backfill.lua with another batch = { ... } line.
plan_with_in_flight() {
  local n="$1" out="$WORK/backfill_in_flight_$1.lua"
  sed -E "s/batch = \{ size = [0-9]+, in_flight = [0-9]+ \}/batch = { size = 64, in_flight = $n }/" \
    plans/backfill.lua > "$out"
  grep -q "batch = { size = 64, in_flight = $n }" "$out" \
    || die "não consegui ajustar batch.in_flight em uma cópia de plans/backfill.lua (a linha batch = { ... } mudou?)"
  printf '%s\n' "$out"
}

truncate_documents() { sql -c "truncate rag_documents"; }

# The scenario goes last: its accents would break byte-counted column widths.
print_table() {
  local i
  printf '\n%7s %9s %9s %9s %9s %-9s %s\n' "docs" "tempo(s)" "docs/s" "RSS(MiB)" "pedidos" "resultado" "cenário"
  printf '%s\n' "$(printf '%.0s-' {1..100})"
  for i in "${!R_LABEL[@]}"; do
    printf '%7s %9s %9s %9s %9s %-9s %s\n' "${R_DOCS[$i]}" "${R_WALL[$i]}" "${R_RATE[$i]}" \
      "${R_RSS[$i]}" "${R_REQ[$i]}" "${R_STATUS[$i]}" "${R_LABEL[$i]}"
  done
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
PG_DIR="$WORK/pg"
PG_PORT="$(pick_port)"
EMBED_PORT_0="$(pick_port)"
EMBED_PORT_LAT="$(pick_port)"

step "PostgreSQL descartável (fsync desligado) na porta $PG_PORT"
scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" "$DB_NAME"
DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" "$DB_NAME")"
export DATABASE_URL
PGVECTOR_NOTE=""
if ! PGVECTOR_NOTE="$(scripts/pg.sh pgvector "$PG_PORT" 2>&1 >/dev/null)"; then
  PGVECTOR_NOTE="${PGVECTOR_NOTE##*pgvector ausente: }"
  note "sem pgvector: $PGVECTOR_NOTE"
else
  PGVECTOR_NOTE=""
fi

step "embed-servers: porta $EMBED_PORT_0 (0 ms) e porta $EMBED_PORT_LAT (${LATENCY_MS} ms)"
EMBED_PIDS+=("$WORK/embed0.pid")
RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed0.pid" "$EMBED_PORT_0" --dim 1536 >/dev/null
EMBED_PIDS+=("$WORK/embed_lat.pid")
RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed_lat.pid" "$EMBED_PORT_LAT" --dim 1536 \
  --latency-ms "$LATENCY_MS" >/dev/null

step "dados de demonstração"
scripts/demo_data.sh "$DATABASE_URL" >/dev/null

step "ragops migrate"
"$BIN" migrate --quiet >/dev/null
STORAGE="$(sql -c "select format_type(atttypid, atttypmod) from pg_attribute
  where attrelid = 'rag_documents'::regclass and attname = 'embedding'")"
if [[ "$STORAGE" == vector* ]]; then
  STORAGE="$STORAGE (pgvector $(sql -c "select extversion from pg_extension where extname = 'vector'"))"
else
  STORAGE="$STORAGE (sem pgvector: ${PGVECTOR_NOTE:-extensão não criada})"
fi
note "armazenamento: $STORAGE"

# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------
truncate_documents
measure "1. backfill frio, provedor 0 ms" plans/backfill.lua "$EMBED_PORT_0" "cold:$DEMO_DOCS"
measure "2. reexecução, nada mudou" plans/backfill.lua "$EMBED_PORT_0" "skip:$DEMO_DOCS"

for n in "${IN_FLIGHT_LEVELS[@]}"; do
  plan="$(plan_with_in_flight "$n")"
  truncate_documents
  measure "3. backfill frio, ${LATENCY_MS} ms, in_flight=$n" "$plan" "$EMBED_PORT_LAT" "cold:$DEMO_DOCS"
done

SCALE_NOTE=""
if [[ "$SCALE_ROWS" -gt 0 ]]; then
  # A cold run at 0 ms does several thousand docs/s; keep a wide margin.
  needed=$((SCALE_ROWS / 2000 + 30))
  if ((SECONDS + needed > BUDGET_S)); then
    SCALE_NOTE="escala pulada: restam $((BUDGET_S - SECONDS)) s do orçamento de ${BUDGET_S} s (estimado: ${needed} s)"
    note "$SCALE_NOTE"
  else
    step "gerando $SCALE_ROWS linhas sintéticas (generate_series)"
    sql -v rows="$SCALE_ROWS" <<'SQL'
set client_min_messages = warning;
drop table if exists bench_synthetic;
create table bench_synthetic (id bigint primary key, titulo text not null, corpo text not null,
                              updated_at timestamptz not null);
insert into bench_synthetic (id, titulo, corpo, updated_at)
select g, 'Registro sintético ' || g,
       'Texto de carga número ' || g || ': ' || md5(g::text) || ' ' || md5((g * 31)::text)
         || ' ' || md5((g * 17)::text),
       timestamptz '2024-01-01 00:00:00+00' + (g % 366) * interval '1 day'
  from generate_series(1, :rows) as g;
analyze bench_synthetic;
SQL
    cat > "$WORK/escala.lua" <<'LUA'
-- Plano de carga do benchmark: linhas sintéticas geradas por bench/run.sh.
local linhas = source "sintetico" {
  sql = [[select id, titulo, corpo, updated_at from bench_synthetic]],
  key = "id",
  updated_at = "updated_at",
  document = function(row)
    return { content = row.titulo .. "\n" .. row.corpo, metadata = { origem = "bench" } }
  end,
}

return plan {
  name = "bench_escala",
  sources = { linhas },
  batch = { size = 64, in_flight = 4 },
  chunking = { max_chars = 2000, overlap = 200 },
  retry = { attempts = 5, base_ms = 500, max_ms = 30000, timeout_s = 60 },
}
LUA
    truncate_documents
    measure "4. escala: backfill frio, 0 ms" "$WORK/escala.lua" "$EMBED_PORT_0" "cold:$SCALE_ROWS"
  fi
fi

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
printf '\n==> resumo do benchmark (%s, %s núcleos, %s)\n' "$(date '+%Y-%m-%d %H:%M')" "$(nproc)" \
  "$(uname -srm)"
printf 'PostgreSQL 15 local com fsync desligado; embed-server local (dim 1536); lotes de 64;\n'
printf 'armazenamento da coluna embedding: %s;\n' "$STORAGE"
printf 'tempo = relógio de parede do processo ragops (inclui iniciar e conectar);\n'
printf 'docs/s = documentos processados / tempo; RSS = pico de memória residente do ragops;\n'
printf 'pedidos = POST /v1/embeddings recebidos pelo embed-server.\n'
print_table
[[ -n "$SCALE_NOTE" ]] && printf '\n%s\n' "$SCALE_NOTE"
printf '\nduração total do benchmark: %d s\n' "$SECONDS"
if [[ $FAILURES -gt 0 ]]; then
  printf '%d medição(ões) falharam; veja as mensagens acima.\n' "$FAILURES"
  exit 1
fi
printf 'todas as medições concluídas com sucesso.\n'
