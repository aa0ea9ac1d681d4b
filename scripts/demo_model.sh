#!/usr/bin/env bash
# scripts/demo_model.sh: the blue/green model change on the demo (make demo-model),
# end to end, while a client queries the live name in a loop.
#
#   scripts/demo_model.sh   needs `make demo` done first (build/demo.env) and pgvector.
#                           Starts a second embed-server (3072 dimensions, the seed's large
#                           model), then: model prepare -> backfill --target shadow ->
#                           index create --target shadow (HNSW on halfvec) -> model compare
#                           (plans/model_compare.lua) -> switch -> rollback -> switch, with a
#                           psql client asking rag_documents for nearest neighbours every
#                           50 ms. Prints how many answers the client got, with errors and
#                           with two models mixed (must be 0 and 0), and exits non-zero when
#                           a step or the client failed. At the end it rolls back and drops
#                           the shadow, so `make demo` keeps working with the 1536 model.
#                           Port of the second server: $RAGOPS_DEMO_MODEL_PORT (default 18082).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$ROOT"

BIN="$ROOT/build/ragops"
ENV_FILE="$ROOT/build/demo.env"
NEW_PID="$ROOT/build/demo-embed-3072.pid"
NEW_PORT="${RAGOPS_DEMO_MODEL_PORT:-18082}"
CLIENT_LOG="$ROOT/build/demo-model-client.log"
STOP_FLAG="$ROOT/build/demo-model-client.stop"
NEW_MODEL="ragops-hash-3072"

[[ -f "$ENV_FILE" && -x "$BIN" ]] || die "rode \`make demo\` antes (build/demo.env e build/ragops não existem)"
set -a; . "$ENV_FILE"; set +a
[[ "$(psql -X -qtA -d "$DATABASE_URL" -c "select count(*) from pg_extension where extname = 'vector'")" == 1 ]] ||
  die "a demo não está em pgvector (a troca para 3.072 dimensões precisa do halfvec); instale-o e rode \`make demo\`"

# The client: nearest neighbours of the first row, one line per answer:
# "<models in the answer>|<model list>" or "ERRO ...".
client() {
  : > "$CLIENT_LOG"
  while [[ ! -f "$STOP_FLAG" ]]; do
    local answer
    answer="$(psql -X -qtA -d "$DATABASE_URL" -c "select count(distinct embedding_model) || '|' ||
      string_agg(distinct embedding_model, ',') from (select embedding_model from rag_documents
      order by embedding <=> (select embedding from rag_documents order by id limit 1) limit 10) t" 2>&1)" ||
      answer="ERRO $answer"
    printf '%s\n' "$answer" >> "$CLIENT_LOG"
    sleep 0.05
  done
}

cleanup() {
  touch "$STOP_FLAG"
  scripts/embed_server.sh stop "$NEW_PID" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "segundo embed-server: o modelo novo ($NEW_MODEL, 3072 dimensões, porta $NEW_PORT)"
new_url="$(RAGOPS_PORT_VARIABLE=RAGOPS_DEMO_MODEL_PORT scripts/embed_server.sh start "$NEW_PID" "$NEW_PORT" --dim 3072)"

rm -f "$STOP_FLAG"
client &
CLIENT_PID=$!

step "ragops model prepare"
"$BIN" model prepare --model "$NEW_MODEL" --dim 3072 --set "provider.url=$new_url"
step "ragops backfill --target shadow (o mesmo executor: dry-run, fila de falhas, retomada)"
"$BIN" backfill --target shadow --dry-run --quiet
"$BIN" backfill --target shadow --quiet
step "ragops index create --target shadow (HNSW em halfvec(3072))"
"$BIN" index create --target shadow --method hnsw --dim 3072 --maintenance-work-mem 1GB
step "ragops model compare plans/model_compare.lua --ef-search 200"
"$BIN" model compare plans/model_compare.lua --ef-search 200 --quiet
step "ragops model switch -> rollback -> switch"
"$BIN" model switch --quiet
sleep 1
"$BIN" model rollback --quiet
sleep 1
"$BIN" model switch --quiet
sleep 1
"$BIN" model status

step "de volta ao modelo da demo (rollback e drop-shadow), para o make demo seguir igual"
"$BIN" model rollback --quiet
"$BIN" model drop-shadow --quiet

touch "$STOP_FLAG"
wait "$CLIENT_PID" || true
answers="$(wc -l < "$CLIENT_LOG")"
errors="$(grep -c '^ERRO' "$CLIENT_LOG" || true)"
mixed="$(grep -vc '^1|' "$CLIENT_LOG" || true)"
seen_new="$(grep -c "|$NEW_MODEL\$" "$CLIENT_LOG" || true)"
cat >&2 <<SUMMARY

==> troca de modelo concluída
  respostas do cliente:        $answers ($seen_new com o modelo novo)
  respostas com erro:          $errors
  respostas fora do esperado:  $mixed (erro ou dois modelos na mesma resposta)
  registro do cliente:         build/demo-model-client.log
SUMMARY
[[ "$errors" == 0 && "$mixed" == 0 && "$seen_new" -gt 0 ]]
