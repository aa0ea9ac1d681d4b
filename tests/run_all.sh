#!/usr/bin/env bash
# tests/run_all.sh: the whole test suite (make test, .ci/run).
#
# 1. scripts/deps.sh; ASan/UBSan build into build-test/;
# 2. throwaway PostgreSQL (--fast) in a mktemp dir, an embed-server and a Prometheus
#    Pushgateway (RAGOPS_TEST_PUSHGATEWAY_URL; the Debian service is never started), on
#    free loopback ports;
#    pgvector from ../shared/pgvector/install.sh when there and root (scripts/pg.sh
#    pgvector): the storage-aware integration specs then run on "real[]" and "vector"
#    (RAGOPS_TEST_STORAGES), otherwise on "real[]" only, with one line saying why;
# 3. ctest (C tests), busted unit specs (tests/lua, tests/plans), busted integration
#    specs (tests/integration, black-box against the services).
# With arguments (tests/run_all.sh tests/integration/x_spec.lua ...), steps 1-2 run
# as usual and only those busted specs run (ctest skipped): for working on one area.
# Last line: "N passed, N failed"; the line before it counts the tests run per storage.
# Exit status non-zero if anything failed or a stage
# crashed (a crashed stage counts as one failure). Services are always stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD_DIR="$ROOT/build-test"
TOTAL_PASSED=0
TOTAL_FAILED=0
STAGE_PROBLEMS=()

WORK_DIR=""
PG_DIR=""
EMBED_PID=""
PUSHGATEWAY_PID=""
SERVICES_UP=0
# Storages the integration specs run on, and the file where tests/integration/helper.lua
# appends one line (the storage) per test run under H.each_storage.
export RAGOPS_TEST_STORAGES="real[]"
export RAGOPS_TEST_STORAGE_LOG=""
VECTOR_SKIPPED=""

say() { printf '\n==> %s\n' "$*"; }
note() { printf 'tests/run_all.sh: %s\n' "$*"; }

# A stage that could not run or whose summary could not be read counts as one failure.
stage_crashed() {
  STAGE_PROBLEMS+=("$1")
  TOTAL_FAILED=$((TOTAL_FAILED + 1))
  note "ERRO: $1"
}

# shellcheck disable=SC2317  # invoked through trap
cleanup() {
  local rc=$?
  set +e
  if [[ -n "$EMBED_PID" ]]; then
    scripts/embed_server.sh stop "$EMBED_PID" >/dev/null 2>&1
  fi
  if [[ -n "$PG_DIR" ]]; then
    scripts/pg.sh stop "$PG_DIR" >/dev/null 2>&1
  fi
  if [[ -n "$PUSHGATEWAY_PID" ]]; then
    kill "$PUSHGATEWAY_PID" >/dev/null 2>&1
    wait "$PUSHGATEWAY_PID" 2>/dev/null # it writes its state file on the way out
  fi
  if [[ -n "$WORK_DIR" && -d "$WORK_DIR" ]]; then
    rm -rf "$WORK_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Free TCP port in 30000..32499 (below Linux's ephemeral range, where --port 0
# servers and outgoing connections take theirs) not in the list of already
# chosen ones ($@).
pick_free_port() {
  local attempt port taken
  for ((attempt = 0; attempt < 100; attempt++)); do
    port=$((30000 + RANDOM % 2500))
    taken=0
    for chosen in "$@"; do [[ "$chosen" == "$port" ]] && taken=1; done
    if [[ $taken -eq 0 ]] && ! port_in_use "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  return 1
}

# Starts prometheus-pushgateway on 127.0.0.1:$1 (state in $WORK_DIR, not /var/lib) and
# exports RAGOPS_TEST_PUSHGATEWAY_URL once it answers; without it, one line says why.
start_pushgateway() {
  local port="$1" attempt
  if ! command -v prometheus-pushgateway >/dev/null 2>&1; then
    note "prometheus-pushgateway ausente: o spec do Pushgateway vai falhar (rode scripts/deps.sh)"
    return 0
  fi
  prometheus-pushgateway --web.listen-address="127.0.0.1:$port" \
    --persistence.file="$WORK_DIR/pushgateway.data" >"$WORK_DIR/pushgateway.log" 2>&1 &
  PUSHGATEWAY_PID=$!
  for ((attempt = 0; attempt < 100; attempt++)); do
    if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
      export RAGOPS_TEST_PUSHGATEWAY_URL="http://127.0.0.1:$port"
      note "RAGOPS_TEST_PUSHGATEWAY_URL=$RAGOPS_TEST_PUSHGATEWAY_URL"
      return 0
    fi
    sleep 0.1
  done
  tail -n 5 "$WORK_DIR/pushgateway.log"
  note "o Pushgateway não respondeu em 10 s"
}

# Installs/detects pgvector on the test server and sets RAGOPS_TEST_STORAGES.
choose_storages() {
  local reason
  if reason="$(scripts/pg.sh pgvector "$PG_PORT" 2>&1 >/dev/null)"; then
    RAGOPS_TEST_STORAGES="real[] vector"
    note "pgvector disponível: os testes de armazenamento rodam em real[] e em vector"
  else
    VECTOR_SKIPPED="${reason##*: pgvector ausente: }"
    note "testes em vector pulados (só real[]): ${VECTOR_SKIPPED}"
  fi
}

# "por armazenamento: real[] N, vector M": tests run under each storage.
print_storage_counts() {
  local storage count line="por armazenamento:"
  for storage in "real[]" vector; do
    count=0
    if [[ -s "$RAGOPS_TEST_STORAGE_LOG" ]]; then
      count="$(grep -cxF -- "$storage" "$RAGOPS_TEST_STORAGE_LOG" || true)"
    fi
    if [[ "$storage" == vector && -n "$VECTOR_SKIPPED" ]]; then
      line+=" vector pulado (${VECTOR_SKIPPED})"
    else
      line+=" $storage $count,"
    fi
  done
  printf '\n%s\n' "${line%,}"
}

# Prints the two summary lines (the last one is read by CI).
print_summary() {
  print_storage_counts
  printf '%d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
}

# Lists the directories among $@ that contain at least one *_spec.lua.
dirs_with_specs() {
  local dir
  for dir in "$@"; do
    if [[ -d "$dir" ]] && [[ -n "$(find "$dir" -name '*_spec.lua' -print -quit)" ]]; then
      printf '%s\n' "$dir"
    else
      note "sem specs em $dir; pulando" >&2
    fi
  done
}

# Runs busted on the given directories and adds its summary to the totals.
run_busted() {
  local label="$1"; shift
  local log="$WORK_DIR/busted-$label.log" rc=0
  # busted --lua re-executes itself through a shell without quoting its arguments,
  # so the module path goes through LUA_PATH (";;" keeps the default path).
  LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;${LUA_PATH:-;}" \
    busted --lua=luajit "$@" 2>&1 | tee "$log" || rc=$?
  local summary
  summary="$(grep -aE '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1 || true)"
  if [[ -z "$summary" ]]; then
    stage_crashed "busted ($label) terminou sem resumo (código $rc)"
    return 0
  fi
  local successes failures errors
  read -r successes failures errors < <(printf '%s\n' "$summary" |
    sed -E 's#^([0-9]+) success(es)? / ([0-9]+) failures? / ([0-9]+) errors?.*#\1 \3 \4#')
  TOTAL_PASSED=$((TOTAL_PASSED + successes))
  TOTAL_FAILED=$((TOTAL_FAILED + failures + errors))
  if [[ $rc -ne 0 && $((failures + errors)) -eq 0 ]]; then
    stage_crashed "busted ($label) saiu com código $rc sem falhas no resumo"
  fi
}

WORK_DIR="$(mktemp -d /tmp/ragops-test.XXXXXX)"
# The postgres user (when we are root) must be able to traverse it.
chmod 755 "$WORK_DIR"
RAGOPS_TEST_STORAGE_LOG="$WORK_DIR/storages.log"
: > "$RAGOPS_TEST_STORAGE_LOG"

# Sanitizers: leaks are errors; third-party internals are suppressed in tests/lsan.supp.
# handle_sigill/handle_abort: a crash by SIGILL or abort() prints its stack on stderr
# too (ASan leaves SIGILL to the default handler, which dies silently with 132).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:handle_sigill=1:handle_abort=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export RAGOPS_SOURCE_DIR="$ROOT"
export RAGOPS_BIN="$BUILD_DIR/ragops"

say "dependências"
if ! scripts/deps.sh; then
  stage_crashed "scripts/deps.sh falhou"
fi

say "compilação ASan/UBSan em build-test/"
BUILD_OK=0
if cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Asan >"$WORK_DIR/cmake.log" 2>&1 &&
   cmake --build "$BUILD_DIR" -j"$(nproc 2>/dev/null || echo 2)" >>"$WORK_DIR/cmake.log" 2>&1; then
  BUILD_OK=1
  note "compilação ok"
else
  tail -n 40 "$WORK_DIR/cmake.log"
  stage_crashed "a compilação falhou (C, busted de integração e serviços pulados)"
fi

if [[ $BUILD_OK -eq 1 ]]; then
  say "serviços: PostgreSQL descartável e embed-server"
  PG_PORT="$(pick_free_port)" || PG_PORT=""
  EMBED_PORT="$(pick_free_port "$PG_PORT")" || EMBED_PORT=""
  if [[ -z "$PG_PORT" || -z "$EMBED_PORT" ]]; then
    stage_crashed "nenhuma porta livre em 30000-32499"
  else
    PG_DIR="$WORK_DIR/pg"
    EMBED_PID="$WORK_DIR/embed.pid"
    read -r -a EMBED_FLAGS <<< "${RAGOPS_TEST_EMBED_FLAGS:-}"
    if scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" ragops_test &&
       EMBED_URL="$(scripts/embed_server.sh start "$EMBED_PID" "$EMBED_PORT" ${EMBED_FLAGS[@]+"${EMBED_FLAGS[@]}"})"; then
      SERVICES_UP=1
      export RAGOPS_TEST_DATABASE_URL
      RAGOPS_TEST_DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" ragops_test)"
      export DATABASE_URL="$RAGOPS_TEST_DATABASE_URL"
      export RAGOPS_EMBED_URL="$EMBED_URL"
      # For resilience specs that restart PostgreSQL mid-run.
      export RAGOPS_TEST_PGDATA="$PG_DIR" RAGOPS_TEST_PGPORT="$PG_PORT"
      note "DATABASE_URL=$DATABASE_URL"
      note "RAGOPS_EMBED_URL=$RAGOPS_EMBED_URL"
      start_pushgateway "$(pick_free_port "$PG_PORT" "$EMBED_PORT")"
      choose_storages
    else
      stage_crashed "não foi possível subir o PostgreSQL ou o embed-server"
    fi
  fi

  if [[ $# -gt 0 ]]; then
    say "somente: $*"
    if [[ $SERVICES_UP -eq 1 ]]; then run_busted selected "$@"; else stage_crashed "serviços indisponíveis"; fi
    print_summary
    [[ $TOTAL_FAILED -eq 0 ]]; exit $?
  fi

  say "testes C (ctest)"
  CTEST_RC=0
  ctest --test-dir "$BUILD_DIR" --output-on-failure 2>&1 | tee "$WORK_DIR/ctest.log" || CTEST_RC=$?
  if grep -q 'No tests were found' "$WORK_DIR/ctest.log"; then
    note "nenhum teste C encontrado; pulando"
  else
    CTEST_SUMMARY="$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$WORK_DIR/ctest.log" | tail -n 1 || true)"
    if [[ -z "$CTEST_SUMMARY" ]]; then
      stage_crashed "ctest terminou sem resumo (código $CTEST_RC)"
    else
      read -r C_FAILED C_TOTAL < <(printf '%s\n' "$CTEST_SUMMARY" |
        sed -E 's#.* ([0-9]+) tests? failed out of ([0-9]+).*#\1 \2#')
      TOTAL_PASSED=$((TOTAL_PASSED + C_TOTAL - C_FAILED))
      TOTAL_FAILED=$((TOTAL_FAILED + C_FAILED))
    fi
  fi
fi

say "specs Lua unitários (busted: tests/lua, tests/plans)"
mapfile -t UNIT_DIRS < <(dirs_with_specs tests/lua tests/plans)
if [[ ${#UNIT_DIRS[@]} -gt 0 ]]; then
  run_busted unit "${UNIT_DIRS[@]}"
fi

say "testes de integração (busted: tests/integration)"
mapfile -t INTEGRATION_DIRS < <(dirs_with_specs tests/integration)
if [[ ${#INTEGRATION_DIRS[@]} -gt 0 ]]; then
  if [[ $SERVICES_UP -eq 1 ]]; then
    run_busted integration "${INTEGRATION_DIRS[@]}"
  else
    stage_crashed "testes de integração não rodaram: binário ou serviços indisponíveis"
  fi
fi

if [[ ${#STAGE_PROBLEMS[@]} -gt 0 ]]; then
  printf '\nproblemas nas etapas:\n'
  printf '  - %s\n' "${STAGE_PROBLEMS[@]}"
fi
print_summary
if [[ $TOTAL_FAILED -gt 0 ]]; then
  exit 1
fi
exit 0
