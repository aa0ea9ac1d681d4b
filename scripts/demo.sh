#!/usr/bin/env bash
# scripts/demo.sh: end-to-end demo (make demo) and its teardown (make demo-stop).
#
#   scripts/demo.sh        deps, Release build, private Postgres (build/demo-pg, port 54329,
#                          db ragops_demo), embed-server (port 18080, dim 1536), demo data,
#                          ragops migrate, ragops run plans/backfill.lua. Re-running reuses
#                          the cluster and the server. Exits with the run's exit code.
#                          pgvector is used when installed (scripts/pg.sh pgvector runs
#                          ../shared/pgvector/install.sh when there and root); the summary
#                          says which storage the embedding column has.
#                          Ports: $RAGOPS_DEMO_PG_PORT and $RAGOPS_DEMO_EMBED_PORT (a taken
#                          port fails with a message naming the variable to change).
#   scripts/demo.sh stop   stops the embed-server and the cluster.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$ROOT"

BUILD_DIR="$ROOT/build"
PG_DIR="$BUILD_DIR/demo-pg"
PG_PORT="${RAGOPS_DEMO_PG_PORT:-54329}"
DB_NAME="ragops_demo"
EMBED_PID="$BUILD_DIR/demo-embed.pid"
EMBED_PORT="${RAGOPS_DEMO_EMBED_PORT:-18080}"
EMBED_DIM=1536
ENV_FILE="$BUILD_DIR/demo.env"
REPORT="$BUILD_DIR/demo-report.json"
BIN="$BUILD_DIR/ragops"

demo_stop() {
  scripts/embed_server.sh stop "$EMBED_PID"
  scripts/pg.sh stop "$PG_DIR"
}

demo_run() {
  step "verificando dependências"
  scripts/deps.sh

  step "compilando (Release) em build/"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j2
  [[ -x "$BIN" ]] || die "a compilação não gerou $BIN"

  step "PostgreSQL privado em build/demo-pg (porta $PG_PORT)"
  RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_PG_PORT scripts/pg.sh start "$PG_DIR" "$PG_PORT" "$DB_NAME"
  local database_url pgvector_note=""
  database_url="$(scripts/pg.sh url "$PG_PORT" "$DB_NAME")"
  if ! pgvector_note="$(scripts/pg.sh pgvector "$PG_PORT" 2>&1 >/dev/null)"; then
    pgvector_note="${pgvector_note##*pgvector ausente: }"
    printf '%s: sem pgvector, a coluna embedding será real[]: %s\n' "$PROG" "$pgvector_note" >&2
  else
    pgvector_note=""
  fi

  step "servidor de embeddings local (porta $EMBED_PORT, dim $EMBED_DIM)"
  local embed_url
  embed_url="$(RAGOPS_BIN="$BIN" RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_EMBED_PORT scripts/embed_server.sh start "$EMBED_PID" "$EMBED_PORT" --dim "$EMBED_DIM")"

  printf 'DATABASE_URL=%s\nRAGOPS_EMBED_URL=%s\n' "$database_url" "$embed_url" > "$ENV_FILE"
  export DATABASE_URL="$database_url"
  export RAGOPS_EMBED_URL="$embed_url"

  step "dados de demonstração (bible-kjv e fortunes-br)"
  scripts/demo_data.sh "$DATABASE_URL"

  step "ragops migrate"
  local rc=0
  "$BIN" migrate || rc=$?
  if [[ $rc -ne 0 ]]; then
    printf '%s: ragops migrate falhou (código %d)\n' "$PROG" "$rc" >&2
    exit "$rc"
  fi

  local storage
  storage="$(psql -X -q -tA -d "$DATABASE_URL" -c "select format_type(atttypid, atttypmod) || case
    when format_type(atttypid, atttypmod) ~ '^(vector|halfvec)' then ' (pgvector '
      || (select extversion from pg_extension where extname = 'vector') || ')' else '' end
    from pg_attribute where attrelid = 'rag_documents'::regclass and attname = 'embedding'")"
  if [[ "$storage" != vector* && "$storage" != halfvec* ]]; then storage+=" (sem pgvector${pgvector_note:+: $pgvector_note})"; fi

  step "ragops run plans/backfill.lua"
  rc=0
  "$BIN" run plans/backfill.lua --report-json "$REPORT" || rc=$?

  cat >&2 <<EOF

==> demonstração concluída (código de saída do run: $rc)
  relatório JSON:        build/demo-report.json
  armazenamento:         $storage
  variáveis de ambiente: build/demo.env  (use: set -a; . build/demo.env; set +a)
  banco:                 $database_url  (psql "$database_url")
  dados do PostgreSQL:   build/demo-pg  (log: build/demo-pg/postgresql.log)
  embed-server:          $embed_url  (log: build/demo-embed.log)
  rodar de novo:         make demo   (reaproveita o cluster e o servidor)
  parar tudo:            make demo-stop
EOF
  exit "$rc"
}

case "${1:-run}" in
  run) demo_run ;;
  stop) demo_stop ;;
  *) printf 'uso: %s [run|stop]\n' "$PROG" >&2; exit 2 ;;
esac
