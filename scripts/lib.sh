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
