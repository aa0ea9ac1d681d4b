#!/usr/bin/env bash
# bench/quota.sh: the benchmark of the provider quota shared by every ragops
# process (issue 25), run by `make bench` after bench/batch.sh
# (RAGOPS_BENCH_QUOTA=0 skips it). Starts its own throwaway PostgreSQL
# (fsync off), loads N synthetic verses (RAGOPS_BENCH_QUOTA_ROWS, default
# 12000) and, for 1, 2 and 4 processes of `ragops run --scale-out`, each
# configured with the whole limit (provider.rate_limits.tokens_per_min = the
# embed-server's --tpm, RAGOPS_BENCH_QUOTA_TPM, default 60000), against a
# fresh embed-server enforcing that --tpm for all its clients:
#
#   1. the utilisation of the limit: tokens the server admitted per minute
#      over RAGOPS_BENCH_QUOTA_SECONDS (default 15) once its first minute's
#      bucket is spent and every process holds a slice, over the --tpm
#      (target >= 0.9), and the 429s the server answered over the whole run;
#   2. the coordination's cost per request: the renewals of the quota (one
#      statement every 2 s per process) and their time in the database,
#      from each process's --report-json (rate_limit.quota_*), over the
#      embedding requests the processes made.
#
# The processes are stopped with SIGINT after the measure (exit code 130,
# report written). Prints a pt-BR table; exits 1 if a check fails.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
cd "$ROOT"

BIN="${RAGOPS_BIN:-$ROOT/build/ragops}"
ROWS="${RAGOPS_BENCH_QUOTA_ROWS:-12000}"
TPM="${RAGOPS_BENCH_QUOTA_TPM:-60000}"
MEASURE_S="${RAGOPS_BENCH_QUOTA_SECONDS:-15}"
PROCESSES=(1 2 4)
WORK="$(mktemp -d /tmp/ragops-bench-quota.XXXXXX)"
PG_DIR="$WORK/pg"
RESULTS=()
trap stop_bench_services EXIT

now_s() { date +%s.%N; }
stats_field() { curl -fsS "$1/stats" > "$WORK/stats.json"; local v; v="$(json_field "$WORK/stats.json" "$2")"; echo "${v:-0}"; }
# report_sum N KEY: KEY summed over the reports of the N-process measure.
report_sum() {
  local total=0 f v
  for f in "$WORK"/report_"$1"_*.json; do
    v="$(json_field "$f" "$2")"
    total="$(awk -v a="$total" -v b="${v:-0}" 'BEGIN { print a + b }')"
  done
  echo "$total"
}

[[ -x "$BIN" ]] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j2 >/dev/null; }

step "serviços: PostgreSQL descartável"
PG_PORT="$(pick_port 19000 19499)"
scripts/pg.sh start --fast "$PG_DIR" "$PG_PORT" ragops_bench_quota >/dev/null
export DATABASE_URL; DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" ragops_bench_quota)"

# load_verses: the synthetic source in $DATABASE_URL.
load_verses() {
  sql "create table verses (id bigint primary key, text text not null, updated_at timestamptz not null default now());
       insert into verses select i, 'And the word ' || md5(i::text) || ' came unto verse ' || i || ' of the book'
         from generate_series(1, $ROWS) i"
}
cat > "$WORK/plan.lua" <<'EOF'
local verses = source "verse" { sql = "select id, text, updated_at from verses", key = "id",
  updated_at = "updated_at", document = function(r) return { content = r.text } end }
return plan { name = "bench_cota", sources = { verses }, batch = { size = 16, in_flight = 4 },
  retry = { attempts = 8, base_ms = 50, max_ms = 1000, timeout_s = 10 } }
EOF

# measure N: N processes against a fresh embed-server; appends a result row.
measure() {
  local n="$1" base pids=() i t0 t1 a0 a1
  # A database of its own per measure: nothing to resume from the one before.
  psql -X -q -d "$(scripts/pg.sh url "$PG_PORT" ragops_bench_quota)" -c "create database ragops_bench_quota_$n" \
    >/dev/null || die "não foi possível criar o banco da medida"
  DATABASE_URL="$(scripts/pg.sh url "$PG_PORT" "ragops_bench_quota_$n")"
  load_verses
  printf 'return { provider = { rate_limits = { tokens_per_min = %d } } }\n' "$TPM" > "$WORK/config.lua"
  "$BIN" migrate --config "$WORK/config.lua" >/dev/null 2>&1 || die "ragops migrate falhou"
  RAGOPS_EMBED_URL="$(RAGOPS_BIN="$BIN" scripts/embed_server.sh start "$WORK/embed_$n.pid" \
    "$(pick_port 19000 19499)" --tpm "$TPM")"
  export RAGOPS_EMBED_URL
  base="${RAGOPS_EMBED_URL%/v1}"
  for i in $(seq 1 "$n"); do
    "$BIN" run "$WORK/plan.lua" --config "$WORK/config.lua" --scale-out --quiet \
      --report-json "$WORK/report_${n}_$i.json" >/dev/null 2>"$WORK/log_${n}_$i.txt" &
    pids+=("$!")
  done
  for _ in $(seq 1 600); do
    (( $(stats_field "$base" admitted_tokens) >= TPM )) && \
      (( $(sql "select count(*) from ragops_quota_holders where expires_at > now()") == n )) && break
    sleep 0.1
  done
  sleep 3
  t0="$(now_s)"; a0="$(stats_field "$base" admitted_tokens)"
  sleep "$MEASURE_S"
  t1="$(now_s)"; a1="$(stats_field "$base" admitted_tokens)"
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    tail -n 5 "$WORK"/log_"$n"_*.txt >&2
    die "um processo terminou antes do fim da medida ($n processos): aumente RAGOPS_BENCH_QUOTA_ROWS"
  done
  kill -INT "${pids[@]}"
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  local refused renewals renew_ms requests
  refused="$(stats_field "$base" rate_limited_by.tokens)"
  renewals="$(report_sum "$n" rate_limit.quota_renewals)"
  renew_ms="$(report_sum "$n" rate_limit.quota_renew_ms)"
  requests="$(report_sum "$n" requests)"
  RAGOPS_BIN="$BIN" scripts/embed_server.sh stop "$WORK/embed_$n.pid" >/dev/null 2>&1 || true
  RESULTS+=("$(awk -v n="$n" -v a="$((a1 - a0))" -v t0="$t0" -v t1="$t1" -v tpm="$TPM" -v r="$refused" \
    -v ren="$renewals" -v ms="$renew_ms" -v req="$requests" 'BEGIN {
      u = a / (tpm / 60 * (t1 - t0));
      printf "| %d | %.3f | %d | %d | %d | %.3f | %.4f |", n, u, r, req, ren, (req > 0 ? ren / req : 0), (req > 0 ? ms / req : 0)
      if (u < 0.9) exit 3 }')") || die "uso abaixo de 0,9 com $n processo(s): ${RESULTS[-1]:-}"
}

for n in "${PROCESSES[@]}"; do
  step "cota compartilhada: $n processo(s) --scale-out contra embed-server --tpm $TPM"
  measure "$n"
done

printf '\n## Cota compartilhada do provedor (tokens por minuto = %d, medida de %d s)\n\n' "$TPM" "$MEASURE_S"
printf '| processos | uso do limite | 429 do servidor | pedidos | renovações | renovações por pedido | ms de banco por pedido |\n'
printf '|---|---|---|---|---|---|---|\n'
printf '%s\n' "${RESULTS[@]}"
