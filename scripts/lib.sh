# scripts/lib.sh: the preamble the scripts of scripts/ share, sourced first
# thing after their header comment:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Strict mode; ROOT, the repository root; PROG, "scripts/<name>.sh"; and the
# pt-BR messages on stderr: die (erro, exit 1), note, step (a "==>" heading).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="scripts/$(basename "${BASH_SOURCE[1]}")"

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
