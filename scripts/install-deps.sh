#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages gsq's builds need (those dpkg does not list yet).
#   scripts/install-deps.sh [build]        what the release build needs: `./run.sh demo`, the GCC
#                                          suite (cmake --workflow --preset test) and isa-caps
#   scripts/install-deps.sh matrix         that, plus what the rest of `./run.sh test` needs
#   scripts/install-deps.sh --list GROUP   print GROUP's packages, one a line; install nothing
# Through apt-get, with sudo when not root. ./run.sh calls it first; it may also be run alone.
set -euo pipefail

# The release build: compilers, CMake, Eigen (interop tests), Catch2, Google Benchmark,
# OpenBLAS (the benchmarks' float baseline), and the model component's libraries: nlohmann/json,
# PCRE2 and SentencePiece (cmake/GsqModelDeps.cmake).
BUILD_PACKAGES=(build-essential cmake libeigen3-dev catch2 libbenchmark-dev libopenblas-dev
                nlohmann-json3-dev libpcre2-dev libsentencepiece-dev)
# The rest of the matrix: Clang with its sanitizer and libFuzzer runtimes and OpenMP, the aarch64
# cross compiler and qemu-aarch64 to run what it builds.
MATRIX_PACKAGES=(clang libclang-rt-dev libomp-dev g++-aarch64-linux-gnu qemu-user)

log() { printf '==> %s\n' "$*"; }
die() { printf 'install-deps.sh: error: %s\n' "$*" >&2; exit 1; }

# select_group GROUP: sets PACKAGES to GROUP's packages.
select_group() {
  case "$1" in
    build) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
    matrix) PACKAGES=("${BUILD_PACKAGES[@]}" "${MATRIX_PACKAGES[@]}") ;;
    *) die "unknown group '$1' (build or matrix)" ;;
  esac
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# The npm package of an independent check (tests/gguf_test.cpp): Hugging Face's GGUF reader,
# pinned, into build/npm of this checkout.  Only where npm and Node >= 20 are already present;
# without them (or without the npm registry) the check skips and says why.
NPM_PACKAGES=(@huggingface/gguf@0.4.6)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

install_npm_packages() {
  command -v npm >/dev/null 2>&1 || return 0
  local major
  major="$(node --version 2>/dev/null | sed -n 's/^v\([0-9]*\).*/\1/p')"
  [[ -n "${major}" && "${major}" -ge 20 ]] || return 0
  if [[ -f "${ROOT}/build/npm/node_modules/@huggingface/gguf/package.json" ]]; then return 0; fi
  log "installing npm packages into build/npm: ${NPM_PACKAGES[*]}"
  mkdir -p "${ROOT}/build/npm"
  npm install --prefix "${ROOT}/build/npm" --no-audit --no-fund --loglevel=error \
    "${NPM_PACKAGES[@]}" ||
    log "warning: npm install failed; the @huggingface/gguf cross-check will skip"
}

main() {
  if [[ "${1:-}" == "--list" ]]; then
    select_group "${2:-build}"
    printf '%s\n' "${PACKAGES[@]}"
    return
  fi
  [[ $# -le 1 ]] || die "usage: scripts/install-deps.sh [build|matrix] | --list [build|matrix]"
  select_group "${1:-build}"
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found (not Debian/Ubuntu?): skipping the package check; gsq needs:"
    printf '    %s\n' "${PACKAGES[@]}"
    return
  fi
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    is_installed "${pkg}" || missing+=("${pkg}")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "all required packages are installed (${1:-build})"
    install_npm_packages
    return
  fi
  log "installing missing packages: ${missing[*]}"
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      die "not root and sudo is unavailable; install as root: apt-get install ${missing[*]}"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"
  install_npm_packages
}

main "$@"
