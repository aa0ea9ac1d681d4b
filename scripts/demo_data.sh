#!/usr/bin/env bash
# scripts/demo_data.sh: creates and fills the demo source tables (verses, fortunes)
# from Debian packages bible-kjv and fortunes-br.
#
#   scripts/demo_data.sh DATABASE_URL
#
# Idempotent: tables are created if missing and loaded only when empty. Rows go
# through COPY (CSV, so tabs/backslashes/quotes in the text are safe) into a temp
# staging table, then one INSERT computes updated_at:
#   '2024-01-01 00:00:00+00' + (id * 7919 % 366) days + (id % 24) hours
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Expected counts: 31,102 KJV verses; fortunes-br "brasil" has 2,510 strfile
# records, 4 of which are blank ("%" right after "%"), so 2,506 texts are loaded.
EXPECTED_VERSES=31102
EXPECTED_FORTUNES=2506
FORTUNES_FILE="${RAGOPS_FORTUNES_FILE:-/usr/share/games/fortunes/brasil}"

[[ $# -eq 1 && -n "$1" ]] || { printf 'uso: %s DATABASE_URL\n' "$PROG" >&2; exit 2; }
DB_URL="$1"

command -v psql >/dev/null 2>&1 || die "psql não encontrado (rode scripts/deps.sh)"

psql_db() {
  psql -X -q -v ON_ERROR_STOP=1 -d "$DB_URL" "$@"
}

count_rows() {
  # $1 is one of our fixed table names (never user input).
  psql_db -tA -c "select count(*) from $1"
}

UPDATED_AT_SQL="timestamptz '2024-01-01 00:00:00+00' + (id * 7919 % 366) * interval '1 day' + (id % 24) * interval '1 hour'"

# KJV: "Ge1:1 In the beginning..." -> id, book, chapter, verse, text as CSV.
verses_csv() {
  bible -f "Gen1:1-Rev22:21" | awk '
    function csv(s) { gsub(/"/, "\"\"", s); return "\"" s "\"" }
    {
      line = $0; sub(/\r$/, "", line)
      if (!match(line, /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+[ \t]/)) {
        printf "linha %d inesperada na saída do bible: %s\n", NR, line > "/dev/stderr"
        exit 1
      }
      ref = substr(line, 1, RLENGTH - 1)
      text = substr(line, RLENGTH + 1)
      sub(/^[ \t]+/, "", text); sub(/[ \t]+$/, "", text)
      match(ref, /[0-9]+:[0-9]+$/)
      book = substr(ref, 1, RSTART - 1)
      split(substr(ref, RSTART), cv, ":")
      print NR "," csv(book) "," cv[1] "," cv[2] "," csv(text)
    }'
}

# fortunes-br: records separated by lines holding only "%"; trimmed, blank ones skipped.
fortunes_csv() {
  awk '
    function csv(s) { gsub(/"/, "\"\"", s); return "\"" s "\"" }
    function flush() {
      sub(/^[ \t\r\n]+/, "", rec); sub(/[ \t\r\n]+$/, "", rec)
      if (rec != "") { n++; print n "," csv(rec) }
      rec = ""; have = 0
    }
    { line = $0; sub(/\r$/, "", line) }
    line ~ /^%[ \t]*$/ { flush(); next }
    { rec = have ? rec "\n" line : line; have = 1 }
    END { flush() }' "$FORTUNES_FILE"
}

load_verses() {
  command -v bible >/dev/null 2>&1 || die "comando bible não encontrado (pacote bible-kjv; rode scripts/deps.sh)"
  note "carregando versículos da Bíblia KJV (bible-kjv)..."
  verses_csv | psql_db -1 \
    -c "create temp table verses_stage (id bigint, book text, chapter int, verse int, text text) on commit drop" \
    -c "\\copy verses_stage from pstdin with (format csv)" \
    -c "insert into verses (id, book, chapter, verse, text, updated_at)
        select id, book, chapter, verse, text, $UPDATED_AT_SQL from verses_stage"
}

load_fortunes() {
  [[ -r "$FORTUNES_FILE" ]] || die "arquivo $FORTUNES_FILE não encontrado (pacote fortunes-br; rode scripts/deps.sh)"
  note "carregando fortunes em português (fortunes-br)..."
  fortunes_csv | psql_db -1 \
    -c "create temp table fortunes_stage (id bigint, text text) on commit drop" \
    -c "\\copy fortunes_stage from pstdin with (format csv)" \
    -c "insert into fortunes (id, text, updated_at)
        select id, text, $UPDATED_AT_SQL from fortunes_stage"
}

psql_db -f "$ROOT/scripts/demo_data.sql" || die "não foi possível criar as tabelas de demonstração (o banco está acessível?)"

verses_before="$(count_rows verses)"
fortunes_before="$(count_rows fortunes)"
if [[ "$verses_before" -eq 0 ]]; then
  load_verses
else
  note "tabela verses já tem dados; mantendo"
fi
if [[ "$fortunes_before" -eq 0 ]]; then
  load_fortunes
else
  note "tabela fortunes já tem dados; mantendo"
fi

verses_count="$(count_rows verses)"
fortunes_count="$(count_rows fortunes)"
printf 'versículos (verses): %s\n' "$verses_count"
printf 'fortunes (fortunes): %s\n' "$fortunes_count"

status=0
if [[ "$verses_count" -ne "$EXPECTED_VERSES" ]]; then
  note "esperava $EXPECTED_VERSES versículos, há $verses_count (para recarregar: truncate verses)"
  status=1
fi
if [[ "$fortunes_count" -ne "$EXPECTED_FORTUNES" ]]; then
  note "esperava $EXPECTED_FORTUNES fortunes, há $fortunes_count (para recarregar: truncate fortunes)"
  status=1
fi
if [[ $status -eq 0 ]]; then
  note "dados de demonstração prontos"
fi
exit "$status"
