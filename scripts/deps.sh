#!/usr/bin/env bash
# scripts/deps.sh: installs the Debian 12 packages ragops needs (build, runtime,
# tests, demo data; prometheus and prometheus-pushgateway for the metrics specs, which
# run those binaries themselves on loopback ports, never as services). Only missing
# packages are installed; apt-get update runs only when something is missing. Without root, it only checks and fails listing what is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libluajit-5.1-dev luajit libuv1-dev libpq-dev libcurl4-openssl-dev
  libjansson-dev libxxhash-dev zlib1g-dev  # zlib: the embed-server's --endless-gzip
  lua-cjson lua-busted
  postgresql-15 postgresql-client-15
  bible-kjv fortunes-br
  ca-certificates curl
  prometheus prometheus-pushgateway
  chromium  # tests: the --report-html page rendered headless (observability_spec)
  dpkg-dev file  # make deb: cpack's dpkg-shlibdeps (dpkg-dev) finds ELF files with file
  systemd lua-yaml  # tests: systemd-analyze verify on the units; the packaging YAML parsed
)

is_installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]]
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  printf 'scripts/deps.sh: erro: dpkg-query não encontrado; este script supõe Debian 12 (instale manualmente: %s)\n' \
    "${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! is_installed "$pkg"; then missing+=("$pkg"); fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  printf 'scripts/deps.sh: todas as dependências já estão instaladas\n' >&2
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  printf 'scripts/deps.sh: erro: faltam pacotes e é preciso ser root para instalá-los:\n  %s\n' "${missing[*]}" >&2
  printf 'Rode como root: apt-get install -y %s\n' "${missing[*]}" >&2
  exit 1
fi

printf 'scripts/deps.sh: instalando pacotes ausentes: %s\n' "${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
printf 'scripts/deps.sh: dependências instaladas\n' >&2
