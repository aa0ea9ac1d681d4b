# scripts/lib.sh: the preamble the scripts of scripts/ and bench/ share,
# sourced first thing after their header comment:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"            (scripts/)
#   . "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh" (bench/)
# Strict mode; ROOT, the repository root; PROG, "<folder>/<name>.sh"; the
# pt-BR messages on stderr: die (erro, exit 1), note, step (a "==>" heading);
# and the benchmarks' free ports and clean-up (pick_port, stop_bench_services).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="$(basename "$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)")/$(basename "${BASH_SOURCE[1]}")"

die() { printf '%s: erro: %s\n' "$PROG" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }
step() { printf '\n==> %s\n' "$*" >&2; }

# "; escolha outra porta com VAR=..." when the caller said which variable the port
# comes from ($RAGOPS_PORT_VARIABLE, e.g. RAGOPS_DEMO_PG_PORT in scripts/demo.sh).
port_hint() {
  [[ -n "${RAGOPS_PORT_VARIABLE:-}" ]] || return 0
  printf '; escolha outra porta com a variável %s (ex.: %s=%d)' \
    "$RAGOPS_PORT_VARIABLE" "$RAGOPS_PORT_VARIABLE" "$(($1 + 1))"
}

# ---- the benchmarks' services (bench/sync.sh, bench/batch.sh) ----

PICKED_PORTS=" "
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port LOW HIGH: a free TCP port in LOW..HIGH, below Linux's ephemeral
# range (32768-60999, where outgoing connections take theirs), not picked
# before by this shell (when not called inside $(...)).
pick_port() {
  local low="$1" high="$2" port
  for _ in $(seq 1 200); do
    port=$((low + RANDOM % (high - low + 1)))
    [[ "$PICKED_PORTS" == *" $port "* ]] && continue
    port_in_use "$port" && continue
    PICKED_PORTS+="$port "
    printf '%s\n' "$port"
    return 0
  done
  die "nenhuma porta livre entre $low e $high (abaixo da faixa efêmera)"
}

# stop_bench_services: for trap EXIT; stops the embed-servers of
# $WORK/embed*.pid (binary $BIN) and the PostgreSQL of $PG_DIR, and removes
# $WORK. Never fails.
stop_bench_services() {
  set +e
  local pidfile
  for pidfile in "$WORK"/embed*.pid; do
    [[ -f "$pidfile" ]] && RAGOPS_BIN="$BIN" "$ROOT/scripts/embed_server.sh" stop "$pidfile" >/dev/null 2>&1
  done
  "$ROOT/scripts/pg.sh" stop "$PG_DIR" >/dev/null 2>&1
  rm -rf "$WORK"
}

# sql TEXT: runs TEXT on $DATABASE_URL (unaligned, tuples only, stops at the first error).
sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DATABASE_URL" -c "$1"; }

# json_field FILE KEY.KEY: the value at that path of a JSON file ("" if absent).
json_field() {
  luajit - "$1" "$2" <<'LUA'
local f = assert(io.open(arg[1]))
local v = require("cjson").decode(f:read("*a"))
f:close()
for k in arg[2]:gmatch("[^.]+") do v = type(v) == "table" and v[k] or nil end
print(v == nil and "" or tostring(v))
LUA
}
