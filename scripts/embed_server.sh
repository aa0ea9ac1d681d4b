#!/usr/bin/env bash
# scripts/embed_server.sh: lifecycle of the local embedding server (ragops embed-server).
#
#   scripts/embed_server.sh start PIDFILE PORT [extra embed-server flags, e.g. --dim 1536]
#       starts it in the background (log next to PIDFILE: X.pid -> X.log), waits for
#       GET /health, prints the base URL (http://127.0.0.1:PORT/v1) on stdout.
#       Idempotent: a live server recorded in PIDFILE is reused.
#   scripts/embed_server.sh stop PIDFILE
#   scripts/embed_server.sh status PIDFILE
#
# The binary is $RAGOPS_BIN, or build/ragops at the repository root.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT_S="${RAGOPS_EMBED_START_TIMEOUT:-30}"

usage() {
  cat >&2 <<'EOF'
uso:
  scripts/embed_server.sh start ARQUIVO_PID PORTA [opções do embed-server, ex.: --dim 1536]
  scripts/embed_server.sh stop ARQUIVO_PID
  scripts/embed_server.sh status ARQUIVO_PID
EOF
  exit 2
}

log_file_for() {
  local pidfile="$1"
  printf '%s.log\n' "${pidfile%.pid}"
}

# Prints the pid recorded in PIDFILE when that process is alive and is an embed-server.
live_pid() {
  local pidfile="$1" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q 'embed-server' || return 1
  fi
  printf '%s\n' "$pid"
}

healthy() {
  local port="$1"
  curl -fsS --max-time 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_healthy() {
  local port="$1" pid="$2" deadline=$((SECONDS + START_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if healthy "$port"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

cmd_start() {
  [[ $# -ge 2 ]] || usage
  local pidfile="$1" port="$2"; shift 2
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then die "porta inválida: $port"; fi
  command -v curl >/dev/null 2>&1 || die "curl não encontrado (rode scripts/deps.sh)"
  local bin="${RAGOPS_BIN:-$ROOT/build/ragops}"
  [[ -x "$bin" ]] || die "binário $bin não encontrado; compile antes (make build)"

  local pid
  if pid="$(live_pid "$pidfile")"; then
    if wait_healthy "$port" "$pid"; then
      note "embed-server já em execução (pid $pid, porta $port); reutilizando"
      printf 'http://127.0.0.1:%s/v1\n' "$port"
      return 0
    fi
    die "o processo $pid de $pidfile não responde em http://127.0.0.1:$port/health; pare-o com: $PROG stop $pidfile"
  fi
  rm -f "$pidfile"
  port_in_use "$port" && die "a porta $port já está em uso por outro processo$(port_hint "$port")"

  mkdir -p "$(dirname "$pidfile")"
  local log
  log="$(log_file_for "$pidfile")"
  note "iniciando embed-server na porta $port (log: $log)"
  # setsid: own session, so a Ctrl-C in the calling terminal does not kill it.
  setsid nohup "$bin" embed-server --port "$port" "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" > "$pidfile"
  if ! wait_healthy "$port" "$pid"; then
    if kill -0 "$pid" 2>/dev/null; then
      note "o embed-server não respondeu em http://127.0.0.1:$port/health em ${START_TIMEOUT_S}s; últimas linhas do log:"
    else
      note "o embed-server terminou logo ao iniciar; últimas linhas do log ($log):"
    fi
    tail -n 20 "$log" >&2 || true
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
  fi
  note "embed-server pronto (pid $pid)"
  printf 'http://127.0.0.1:%s/v1\n' "$port"
}

cmd_stop() {
  [[ $# -eq 1 ]] || usage
  local pidfile="$1" pid i
  if ! pid="$(live_pid "$pidfile")"; then
    rm -f "$pidfile"
    note "nenhum embed-server em execução para $pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    note "embed-server (pid $pid) não terminou com SIGTERM em 10s; enviando SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  note "embed-server parado (pid $pid)"
}

cmd_status() {
  [[ $# -eq 1 ]] || usage
  local pid
  if pid="$(live_pid "$1")"; then
    printf 'em execução (pid %s)\n' "$pid"
    return 0
  fi
  printf 'parado\n'
  return 3
}

main() {
  [[ $# -ge 1 ]] || usage
  local sub="$1"; shift
  case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help|help) usage ;;
    *) note "subcomando desconhecido: $sub"; usage ;;
  esac
}

main "$@"
