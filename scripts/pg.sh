#!/usr/bin/env bash
# scripts/pg.sh: manages a private PostgreSQL cluster for the demo and the tests.
#
#   scripts/pg.sh start [--fast] DATADIR PORT [DBNAME ...]
#       initdb (if needed) + start on 127.0.0.1:PORT, wait until ready, createdb DBNAME.
#       --fast: fsync=off, synchronous_commit=off, full_page_writes=off (test clusters only).
#       Idempotent: a cluster already running in DATADIR is reused.
#   scripts/pg.sh stop DATADIR
#   scripts/pg.sh status DATADIR
#   scripts/pg.sh createdb PORT DBNAME
#   scripts/pg.sh url PORT DBNAME      -> postgresql://postgres@127.0.0.1:PORT/DBNAME
#   scripts/pg.sh pgvector PORT
#       runs ../shared/pgvector/install.sh (beside the repository) when it exists and we
#       are root, then exits 0 when the server on PORT offers the "vector" extension;
#       otherwise exits 1 with one pt-BR line on stderr saying why not.
#
# As root, initdb/pg_ctl run as the "postgres" system user (created if missing) via
# runuser, because PostgreSQL refuses to run as root. If that user cannot reach
# DATADIR (a parent directory without the x bit for it), the cluster lives under
# /tmp and DATADIR becomes a symlink to it.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat >&2 <<'EOF'
uso:
  scripts/pg.sh start [--fast] DATADIR PORTA [BANCO ...]
  scripts/pg.sh stop DATADIR
  scripts/pg.sh status DATADIR
  scripts/pg.sh createdb PORTA BANCO
  scripts/pg.sh url PORTA BANCO
  scripts/pg.sh pgvector PORTA
EOF
  exit 2
}

# Directory holding initdb/pg_ctl (PG_BIN overrides; newest installed major otherwise).
find_pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "$PG_BIN/pg_ctl" ]] || die "PG_BIN=$PG_BIN não contém pg_ctl"
    printf '%s\n' "$PG_BIN"; return
  fi
  if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
    printf '%s\n' /usr/lib/postgresql/15/bin; return
  fi
  local candidate
  candidate="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$candidate" && -x "$candidate/pg_ctl" ]]; then
    printf '%s\n' "$candidate"; return
  fi
  local from_path
  from_path="$(command -v pg_ctl 2>/dev/null || true)"
  [[ -n "$from_path" ]] || die "binários do PostgreSQL não encontrados (instale postgresql-15: scripts/deps.sh)"
  dirname "$from_path"
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Runs a command as the cluster owner (postgres when we are root, ourselves otherwise).
as_owner() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ensure_postgres_user() {
  is_root || return 0
  if ! id -u postgres >/dev/null 2>&1; then
    note "criando o usuário de sistema postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
}

# Absolute path without requiring the path to exist.
abs_path() {
  local path="$1"
  if [[ "$path" != /* ]]; then path="$PWD/$path"; fi
  # Normalise through the parent when it exists (keeps symlinks of the leaf intact).
  local parent base
  parent="$(dirname "$path")"; base="$(basename "$path")"
  if [[ -d "$parent" ]]; then
    printf '%s/%s\n' "$(cd "$parent" && pwd -P)" "$base"
  else
    printf '%s\n' "$path"
  fi
}

fallback_dir_for() {
  local hash
  hash="$(printf '%s' "$1" | md5sum | cut -c1-12)"
  printf '/tmp/ragops-pg-%s\n' "$hash"
}

# Resolves DATADIR to the real cluster directory (following the /tmp fallback link).
resolve_datadir() {
  local datadir
  datadir="$(abs_path "$1")"
  if [[ -L "$datadir" ]]; then
    readlink -f "$datadir"
  else
    printf '%s\n' "$datadir"
  fi
}

# Creates DATADIR so that the owner can use it; prints the directory actually used.
prepare_datadir() {
  local requested="$1" datadir
  datadir="$(abs_path "$requested")"
  if [[ -L "$datadir" ]]; then
    readlink -f "$datadir"; return
  fi
  mkdir -p "$datadir"
  if is_root; then
    chown postgres: "$datadir"
    chmod 700 "$datadir"
    if ! runuser -u postgres -- test -w "$datadir" -a -x "$datadir"; then
      local fallback
      fallback="$(fallback_dir_for "$datadir")"
      note "o usuário postgres não alcança $datadir (algum diretório pai sem permissão x);"
      note "usando $fallback e criando $datadir como link simbólico para ele"
      rmdir "$datadir" 2>/dev/null || die "$datadir não está vazio e não é acessível ao usuário postgres"
      mkdir -p "$fallback"
      chown postgres: "$fallback"
      chmod 700 "$fallback"
      ln -s "$fallback" "$datadir"
      datadir="$fallback"
    fi
  else
    chmod 700 "$datadir"
  fi
  printf '%s\n' "$datadir"
}

pick_locale() {
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
    printf 'C.UTF-8\n'
  else
    printf 'C\n'
  fi
}

write_config() {
  local datadir="$1" port="$2" fast="$3"
  local conf="$datadir/ragops.conf"
  {
    printf '# Gerado por scripts/pg.sh; reescrito a cada start.\n'
    printf "listen_addresses = '127.0.0.1'\n"
    printf 'port = %d\n' "$port"
    # Unix socket inside the data dir: private to this cluster.
    printf "unix_socket_directories = '%s'\n" "${datadir//\'/\'\'}"
    printf "logging_collector = off\n"
    if [[ "$fast" == 1 ]]; then
      printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n'
    else
      printf 'fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n'
    fi
  } > "$conf"
  if ! grep -q "^include_if_exists = 'ragops.conf'" "$datadir/postgresql.conf"; then
    printf "\ninclude_if_exists = 'ragops.conf'\n" >> "$datadir/postgresql.conf"
  fi
  # Trust only for local sockets and 127.0.0.1.
  cat > "$datadir/pg_hba.conf" <<'EOF'
# Gerado por scripts/pg.sh: cluster privado de desenvolvimento/testes.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
  if is_root; then chown postgres: "$conf" "$datadir/pg_hba.conf" "$datadir/postgresql.conf"; fi
}

running_port() {
  # Line 4 of postmaster.pid holds the port.
  sed -n '4p' "$1/postmaster.pid" 2>/dev/null || true
}

wait_ready() {
  local port="$1" bin="$2" i
  for ((i = 0; i < 60; i++)); do
    if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; then return 0; fi
    sleep 0.5
  done
  return 1
}

db_exists() {
  local port="$1" db="$2"
  local out
  out="$(psql -X -q -tA -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
          -v dbname="$db" <<'SQL'
select 1 from pg_database where datname = :'dbname';
SQL
)"
  [[ "$out" == 1 ]]
}

cmd_createdb() {
  local port="$1" db="$2"
  if db_exists "$port" "$db"; then
    return 0
  fi
  note "criando o banco $db"
  createdb -h 127.0.0.1 -p "$port" -U postgres -E UTF8 -T template0 "$db"
}

cmd_start() {
  local fast=0
  if [[ "${1:-}" == "--fast" ]]; then fast=1; shift; fi
  [[ $# -ge 2 ]] || usage
  local requested="$1" port="$2"; shift 2
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then die "porta inválida: $port"; fi

  local bin datadir
  bin="$(find_pg_bin)"
  ensure_postgres_user
  datadir="$(prepare_datadir "$requested")"

  if [[ ! -f "$datadir/PG_VERSION" ]]; then
    note "inicializando o cluster em $datadir"
    as_owner "$bin/initdb" -D "$datadir" -U postgres -A trust -E UTF8 \
      --locale="$(pick_locale)" >"$datadir.initdb.log" 2>&1 \
      || { cat "$datadir.initdb.log" >&2 2>/dev/null || true; die "initdb falhou em $datadir"; }
  fi

  if as_owner "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    local current
    current="$(running_port "$datadir")"
    if [[ -n "$current" && "$current" != "$port" ]]; then
      die "o cluster em $datadir já está rodando na porta $current (pedida: $port); pare-o antes"
    fi
    note "cluster já em execução em $datadir (porta $port); reutilizando"
  else
    write_config "$datadir" "$port" "$fast"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "a porta $port já está em uso por outro processo$(port_hint "$port")"
    fi
    note "iniciando o PostgreSQL na porta $port$([[ $fast == 1 ]] && printf ' (modo rápido, sem fsync)')"
    if ! as_owner "$bin/pg_ctl" -D "$datadir" -l "$datadir/postgresql.log" -w -t 60 start >/dev/null; then
      tail -n 30 "$datadir/postgresql.log" >&2 2>/dev/null || true
      die "o PostgreSQL não iniciou; veja $datadir/postgresql.log"
    fi
  fi
  wait_ready "$port" "$bin" || die "o PostgreSQL não ficou pronto na porta $port"

  local db
  for db in "$@"; do
    cmd_createdb "$port" "$db"
  done
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local bin datadir
  bin="$(find_pg_bin)"
  datadir="$(resolve_datadir "$1")"
  if [[ ! -f "$datadir/PG_VERSION" ]]; then
    note "nenhum cluster em $1; nada a parar"
    return 0
  fi
  if ! as_owner "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    note "o cluster em $1 já está parado"
    return 0
  fi
  as_owner "$bin/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >/dev/null
  note "cluster em $1 parado"
}

cmd_status() {
  [[ $# -eq 1 ]] || usage
  local bin datadir
  bin="$(find_pg_bin)"
  datadir="$(resolve_datadir "$1")"
  if [[ -f "$datadir/PG_VERSION" ]] && as_owner "$bin/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
    printf 'em execução (porta %s)\n' "$(running_port "$datadir")"
    return 0
  fi
  printf 'parado\n'
  return 3
}

cmd_url() {
  [[ $# -eq 2 ]] || usage
  printf 'postgresql://postgres@127.0.0.1:%s/%s\n' "$1" "$2"
}

# Installs pgvector when the shared installer is there and we are root; then checks
# that the server offers the extension. Exit 1 with the reason when it does not.
cmd_pgvector() {
  [[ $# -eq 1 ]] || usage
  local port="$1" root installer available
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  installer="$root/../shared/pgvector/install.sh"
  if [[ -f "$installer" ]] && is_root; then
    bash "$installer" >&2 || note "aviso: $installer falhou"
  fi
  available="$(psql -X -q -tA -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "select count(*) from pg_available_extensions where name = 'vector'" 2>/dev/null || true)"
  [[ "$available" == 1 ]] && return 0
  if [[ ! -f "$installer" ]]; then
    note "pgvector ausente: o servidor não oferece a extensão vector e ../shared/pgvector/install.sh não existe"
  elif ! is_root; then
    note "pgvector ausente: o servidor não oferece a extensão vector e instalá-lo com ../shared/pgvector/install.sh exige root"
  else
    note "pgvector ausente: ../shared/pgvector/install.sh rodou, mas o servidor não oferece a extensão vector"
  fi
  return 1
}

main() {
  [[ $# -ge 1 ]] || usage
  local sub="$1"; shift
  case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    createdb) [[ $# -eq 2 ]] || usage; cmd_createdb "$@" ;;
    url) cmd_url "$@" ;;
    pgvector) cmd_pgvector "$@" ;;
    -h|--help|help) usage ;;
    *) note "subcomando desconhecido: $sub"; usage ;;
  esac
}

main "$@"
