#!/usr/bin/env bash
# bench/batch.sh: the benchmark of the Batch API mode (issue 24), run by
# `make bench` after bench/run.sh (RAGOPS_BENCH_BATCH=0 skips it). Starts its
# own throwaway PostgreSQL (fsync off) and an embed-server with the simulated
# Batch API (--batch-latency-s 2, dense vectors of RAGOPS_BENCH_BATCH_DIM
# dimensions, default 128: the server keeps every file in memory, and 20
# output files of 50,000 vectors of 1,536 dimensions would not fit its 2 GB)
# on free ports, loads N synthetic documents of ~290 characters
# (RAGOPS_BENCH_BATCH_DOCS, default 1,000,000) and prints a pt-BR table:
#
#   1. the dry-run in batch mode: its estimate of the batch price (tokens
#      by bytes/4, no calibration yet);
#   2. the backfill in batch mode (embed.mode = "batch", poll every 0.5 s):
#      wall time, docs/s, the engine's CPU per document and peak RSS (GNU
#      time), parts built, files uploaded, batches created, polls, result
#      files downloaded, duplicate uploads (must be 0), and the report's spend;
#   3. the dry-run again with --overwrite (calibrated by what the run was
#      billed): its batch price against the report's spend.
#
# Every step is checked (exit codes, every document indexed, no duplicate
# upload); the script exits 1 if a check fails. Everything it starts is
# stopped on exit.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

BIN="${RAGOPS_BIN:-$ROOT/build/ragops}"
DOCS="${RAGOPS_BENCH_BATCH_DOCS:-1000000}"
DIM="${RAGOPS_BENCH_BATCH_DIM:-128}"
WORK="$(mktemp -d /tmp/ragops-bench-batch.XXXXXX)"
chmod 755 "$WORK" # the postgres system user (when we are root) must reach the cluster dir
PG_DIR="$WORK/pg"
TIME_BIN="$(command -v /usr/bin/time || true)"

trap stop_bench_services EXIT

stat_of() { curl -fsS "$EMBED_BASE/stats" > "$WORK/stats.json"; local v; v="$(json_field "$WORK/stats.json" "$1")"; echo "${v:-0}"; }

[[ -x "$BIN" ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j2 >/dev/null; }
[[ -n "$TIME_BIN" ]] || die "GNU time ausente (apt-get install time)"

step "serviços: PostgreSQL descartável e embed-server com a API de lotes simulada (dim $DIM)"
PG_PORT="$(pick_port 19000 19999)"
scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" ragops_bench_batch >/dev/null
export DATABASE_URL; DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" ragops_bench_batch)"
EMBED_URL="$(RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed.pid" "$(pick_port 19000 19999)" --dim "$DIM" --dense \
  --batch-latency-s 2 --batch-max-store-bytes 2000000000)"
EMBED_BASE="${EMBED_URL%/v1}"
export RAGOPS_EMBED_URL="$EMBED_URL" RAGOPS_BATCH_DIR="$WORK/lotes"

CONFIG="$WORK/config.lua"
cat >"$CONFIG" <<EOF
return { provider = { model = "bench-lote", dim = $DIM, price_per_1m_tokens = { ["bench-lote"] = 0.13 } } }
EOF
PLAN="$WORK/plan.lua"
cat >"$PLAN" <<'EOF'
return plan { name = "bench_lote", batch = { size = 64, in_flight = 1 },
  embed = { mode = "batch", poll_s = 0.5, poll_max_s = 2 },
  sources = { source "doc" { sql = [[select id, corpo, updated_at from bench_docs]], key = "id",
    updated_at = "updated_at", document = function(r) return { content = r.corpo } end } } }
EOF

step "dados: $DOCS documentos sintéticos"
sql "create table bench_docs (id bigint primary key, corpo text not null, updated_at timestamptz not null);
     insert into bench_docs select g, 'Registro ' || g || ' do acervo de carga: ' || md5(g::text) || ' relatado em '
       || (g % 28 + 1) || '/' || (g % 12 + 1) || ' sobre o assunto ' || md5((g * 31)::text)
       || ', com observações ' || md5((g * 17)::text) || ' e referência cruzada '
       || md5((g * 7)::text) || ' para consulta (cópia ' || substr(md5((g * 3)::text), 1, 20) || ').',
       timestamptz '2024-01-01 00:00:00+00' + (g % 366) * interval '1 day' from generate_series(1, $DOCS) g;
     analyze bench_docs"
"$BIN" migrate --config "$CONFIG" --quiet >/dev/null || die "ragops migrate falhou"

step "1. dry-run em lotes (sem calibração)"
"$BIN" backfill --plan "$PLAN" --config "$CONFIG" --dry-run --quiet --report-json "$WORK/dry1.json" >/dev/null \
  || die "o dry-run falhou"
DRY1="$(json_field "$WORK/dry1.json" estimate.cost_usd_batch)"

step "2. backfill de $DOCS documentos em lotes"
t0=$EPOCHREALTIME
PROFILE=()
# RAGOPS_BENCH_PERF=1: the run under perf record (the profile is printed at the end).
[[ "${RAGOPS_BENCH_PERF:-0}" == 1 ]] && PROFILE=(perf record -F 499 -g -o "$WORK/perf.data" --)
"$TIME_BIN" -v -o "$WORK/run.time" "${PROFILE[@]}" "$BIN" backfill --plan "$PLAN" --config "$CONFIG" --quiet \
  --report-json "$WORK/run.json" >/dev/null 2>"$WORK/run.err" || { tail -n 20 "$WORK/run.err" >&2; die "o backfill falhou"; }
t1=$EPOCHREALTIME
WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
RSS="$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$WORK/run.time")"
CPU_US="$(awk -F': ' -v n="$DOCS" '/User time|System time/ { s += $2 } END { printf "%.1f", s * 1e6 / n }' "$WORK/run.time")"
INDEXED="$(sql "select count(*) from rag_documents")"
[[ "$INDEXED" == "$DOCS" ]] || die "$INDEXED documentos no índice, esperados $DOCS"
PARTS="$(sql "select count(*) from ragops_batches")"
UPLOADS="$(stat_of files_uploaded)"; CREATED="$(stat_of batches_created)"; POLLS="$(stat_of batch_polls)"
DOWNLOADS="$(stat_of file_downloads)"; DUPLICATES="$(stat_of duplicate_uploads)"
[[ "$DUPLICATES" == 0 ]] || die "$DUPLICATES envio(s) repetido(s)"
SPENT="$(json_field "$WORK/run.json" spend.spent_usd)"
TOKENS="$(json_field "$WORK/run.json" tokens)"

step "3. dry-run --overwrite depois (calibrado pelo que a execução pagou)"
"$BIN" backfill --plan "$PLAN" --config "$CONFIG" --dry-run --overwrite --quiet --report-json "$WORK/dry2.json" \
  >/dev/null || die "o segundo dry-run falhou"
DRY2="$(json_field "$WORK/dry2.json" estimate.cost_usd_batch)"

usd() { awk -v v="$1" 'BEGIN { printf "US$ %.4f", v }'; }
diff_pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%+.2f%%", (a - b) * 100 / b; else print "-" }'; }
printf '\n==> modo de lotes: %s documentos de ~290 caracteres, dim %s, lotes simulados de 2 s (%s, %s núcleos)\n' \
  "$DOCS" "$DIM" "$(date '+%Y-%m-%d %H:%M')" "$(nproc)"
printf '%-52s %s\n' "tempo total do backfill em lotes:" "$WALL s ($(awk -v n="$DOCS" -v s="$WALL" 'BEGIN { printf "%.0f", n / s }') docs/s)"
printf '%-52s %s\n' "CPU do ragops por documento:" "$CPU_US µs"
printf '%-52s %s\n' "pico de RSS do ragops:" "$RSS MiB"
printf '%-52s %s\n' "partes montadas / arquivos enviados / lotes criados:" "$PARTS / $UPLOADS / $CREATED"
printf '%-52s %s\n' "consultas de estado / arquivos baixados:" "$POLLS / $DOWNLOADS"
printf '%-52s %s\n' "envios repetidos:" "$DUPLICATES"
printf '%-52s %s\n' "tokens cobrados / gasto do relatório (preço de lote):" "$TOKENS / $(usd "$SPENT")"
printf '%-52s %s\n' "dry-run antes (bytes/4, sem calibração):" "$(usd "$DRY1") ($(diff_pct "$DRY1" "$SPENT") do gasto)"
printf '%-52s %s\n' "dry-run --overwrite depois (calibrado):" "$(usd "$DRY2") ($(diff_pct "$DRY2" "$SPENT") do gasto)"
if [[ "${RAGOPS_BENCH_PERF:-0}" == 1 ]]; then
  printf '\n==> perf: funções com mais amostras (sem filhos)\n'
  perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null | grep -v "^#" | grep "%" | head -40 || true
fi
