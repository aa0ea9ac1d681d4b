#!/usr/bin/env bash
# bench/sync.sh: the benchmark of `ragops sync` (issue 12), run by `make bench`
# after bench/run.sh (RAGOPS_BENCH_SYNC=0 skips it). Starts its own throwaway
# PostgreSQL (fsync off) and two embed-servers (0 ms and 200 ms) on free ports,
# loads N synthetic verses (RAGOPS_BENCH_SYNC_ROWS, default 100000) and prints
# a pt-BR table:
#
#   1. full backfill of the N rows (the baseline), provider at 0 ms
#   2. draining a backlog of N changes (every row updated) with `ragops sync`
#   3. apply latency, commit on the source -> document indexed (p50/p95/p99),
#      with `ragops sync --follow` under a steady load of 100 and 1,000
#      changes/s for RAGOPS_BENCH_SYNC_SECONDS (default 10), provider at 0 and
#      200 ms. Latency per document = indexed_at (the write transaction's
#      now(), a hair before its commit) - source updated_at (clock_timestamp()
#      of the UPDATE, a hair before its commit).
#   4. CPU of an idle follower over 10 s (utime + stime from /proc/PID/stat)
#
# Every step is checked (exit codes, queue drained, documents indexed); the
# script exits 1 if a check fails. Everything it starts is stopped on exit.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

BIN="${RAGOPS_BIN:-$ROOT/build/ragops}"
ROWS="${RAGOPS_BENCH_SYNC_ROWS:-100000}"
SECONDS_PER_LOAD="${RAGOPS_BENCH_SYNC_SECONDS:-10}"
RATES=(100 1000)
LATENCIES=(0 200)
WORK="$(mktemp -d /tmp/ragops-bench-sync.XXXXXX)"
PG_DIR="$WORK/pg"
FOLLOWER_PID=""
RESULTS=()

cleanup() {
  set +e
  [[ -n "$FOLLOWER_PID" ]] && kill -TERM "$FOLLOWER_PID" 2>/dev/null && wait "$FOLLOWER_PID" 2>/dev/null
  stop_bench_services
}
trap cleanup EXIT

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
per_s() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

[[ -x "$BIN" ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j2 >/dev/null; }

step "serviços: PostgreSQL descartável e embed-servers (0 ms e 200 ms)"
PG_PORT="$(pick_port 19500 19999)"
scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" ragops_bench_sync >/dev/null
export DATABASE_URL; DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" ragops_bench_sync)"
declare -A EMBED_URL
for ms in "${LATENCIES[@]}"; do
  EMBED_URL[$ms]="$(RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed_$ms.pid" "$(pick_port 19500 19999)" --latency-ms "$ms")"
done
export RAGOPS_EMBED_URL="${EMBED_URL[0]}"

PLAN="$WORK/sync_plan.lua"
cat >"$PLAN" <<'EOF'
local verses = source "verse" {
  sql = [[select id, text, updated_at from verses]], key = "id", updated_at = "updated_at",
  document = function(r) return { content = r.text } end,
  sync = { strategy = "trigger", table = "verses" },
}
return plan { name = "bench_sync", sources = { verses }, batch = { size = 64, in_flight = 4 } }
EOF

step "dados: $ROWS versículos sintéticos"
sql "create table verses (id bigint primary key, text text not null, updated_at timestamptz not null);
     insert into verses select i, 'And the word ' || md5(i::text) || ' came unto verse ' || i, now()
       from generate_series(1, $ROWS) i"
"$BIN" migrate --quiet >/dev/null || die "ragops migrate falhou"

step "1. backfill completo de $ROWS linhas (linha de base)"
t0="$(now_s)"
"$BIN" run "$PLAN" --quiet >/dev/null || die "backfill falhou"
t1="$(now_s)"
RESULTS+=("backfill completo de $ROWS linhas|$(elapsed "$t0" "$t1") s|$(per_s "$ROWS" "$t0" "$t1") docs/s")

step "2. drenar um acúmulo de $ROWS mudanças com ragops sync"
"$BIN" sync install "$PLAN" >/dev/null || die "sync install falhou"
sql "update verses set text = text || ' (acúmulo)', updated_at = clock_timestamp()"
[[ "$(sql 'select count(*) from ragops_sync.changes')" == "$ROWS" ]] || die "a fila não tem $ROWS mudanças"
t0="$(now_s)"
"$BIN" sync "$PLAN" --quiet >/dev/null || die "ragops sync falhou"
t1="$(now_s)"
[[ "$(sql 'select count(*) from ragops_sync.changes')" == "0" ]] || die "a fila não foi drenada"
RESULTS+=("drenar $ROWS mudanças (ragops sync)|$(elapsed "$t0" "$t1") s|$(per_s "$ROWS" "$t0" "$t1") docs/s")

start_follower() { # $1: embed URL
  RAGOPS_EMBED_URL="$1" "$BIN" sync "$PLAN" --follow --quiet >"$WORK/follower.log" 2>&1 &
  FOLLOWER_PID=$!
  for _ in $(seq 1 100); do
    [[ "$(sql "select count(*) from ragops_runs where plan = 'sync:bench_sync' and status = 'running'
               and heartbeat_at > now() - interval '5 s'")" == "1" ]] && return 0
    sleep 0.1
  done
  die "o seguidor não começou (veja $WORK/follower.log)"
}
stop_follower() { kill -TERM "$FOLLOWER_PID"; wait "$FOLLOWER_PID" || true; FOLLOWER_PID=""; }

# Steady load: every 100 ms one UPDATE of rate/10 distinct rows, for the duration.
load() { # $1: changes/s
  local per_tick=$(( $1 / 10 )) ticks=$(( SECONDS_PER_LOAD * 10 )) id=0 t
  for t in $(seq 1 "$ticks"); do
    printf "update verses set text = text || '.', updated_at = clock_timestamp() where id > %d and id <= %d;\nselect pg_sleep(0.1);\n" \
      "$id" $(( id + per_tick ))
    id=$(( (id + per_tick) % (ROWS - per_tick) ))
  done | psql -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE_URL" >/dev/null
}

step "3. latência do commit ao documento indexado (--follow)"
for ms in "${LATENCIES[@]}"; do
  start_follower "${EMBED_URL[$ms]}"
  for rate in "${RATES[@]}"; do
    mark="$(sql 'select clock_timestamp()')"
    t0="$(now_s)"
    load "$rate"
    t1="$(now_s)"
    for _ in $(seq 1 600); do [[ "$(sql 'select count(*) from ragops_sync.changes')" == "0" ]] && break; sleep 0.1; done
    [[ "$(sql 'select count(*) from ragops_sync.changes')" == "0" ]] || die "o seguidor não alcançou a carga"
    p="$(sql "select string_agg(to_char(v * 1000, 'FM999990'), ' / ') from unnest((
               select percentile_cont(array[0.5, 0.95, 0.99]) within group (order by extract(epoch from indexed_at - source_updated_at))
                 from rag_documents where source_updated_at >= '$mark'::timestamptz)) as v")"
    n="$(sql "select count(*) from rag_documents where source_updated_at >= '$mark'::timestamptz")"
    RESULTS+=("$rate mudanças/s pedidas ($(per_s "$n" "$t0" "$t1")/s reais), provedor $ms ms|p50 / p95 / p99 = $p ms|$n docs")
  done
  stop_follower
done

step "4. CPU do seguidor ocioso (10 s)"
start_follower "${EMBED_URL[0]}"
sleep 2
ticks() { awk '{ print $14 + $15 }' "/proc/$FOLLOWER_PID/stat"; }
a="$(ticks)"; sleep 10; b="$(ticks)"
cpu="$(awk -v d="$((b - a))" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / hz / 10 * 100 }')"
stop_follower
RESULTS+=("seguidor ocioso (LISTEN)|CPU $cpu %|10 s")

printf '\n%-60s | %-28s | %s\n' "medida" "resultado" "volume"
printf '%s\n' "------------------------------------------------------------------------------------------------------"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r a b c <<<"$r"
  printf '%-60s | %-28s | %s\n' "$a" "$b" "$c"
done
