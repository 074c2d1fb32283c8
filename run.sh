#!/usr/bin/env bash
# run.sh: the two commands the README names.
#   ./run.sh demo [args...]   build (release) and run the demo, passing args through
#   ./run.sh test             configure, build and run every test (cmake --workflow --preset test)
# Both first install whatever Debian packages are missing (apt-get, via sudo when not root).
set -euo pipefail

# The program `./run.sh demo` runs, relative to the release build directory.
DEMO_TARGET="examples/finetune"

# Debian packages the build needs. Each is installed only if dpkg says it is missing.
PACKAGES=(build-essential cmake libeigen3-dev catch2 libbenchmark-dev libopenblas-dev)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_DIR="${REPO_ROOT}/build/release"

log() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<USAGE
usage: ./run.sh demo [args...]   build in release mode and run ${DEMO_TARGET} with args
       ./run.sh test             build and run all tests (cmake --workflow --preset test)
USAGE
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

ensure_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found (not Debian/Ubuntu?): skipping package checks"
    return
  fi
  local missing=()
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    is_installed "${pkg}" || missing+=("${pkg}")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "all required packages are installed"
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
}

check_cmake() {
  command -v cmake >/dev/null 2>&1 || die "cmake not found"
  local version
  version="$(cmake --version | head -n1 | awk '{print $3}')"
  local major minor
  IFS=. read -r major minor _ <<<"${version}"
  if (( major < 3 || (major == 3 && minor < 25) )); then
    die "CMake >= 3.25 is needed for CMakePresets.json workflows (found ${version})"
  fi
}

cmd_test() {
  ensure_packages
  check_cmake
  log "configure, build and test: cmake --workflow --preset test"
  cd "${REPO_ROOT}"
  cmake --workflow --preset test
  log "all tests passed"
}

cmd_demo() {
  ensure_packages
  check_cmake
  log "configure and build: cmake --workflow --preset demo"
  cd "${REPO_ROOT}"
  cmake --workflow --preset demo
  local demo="${BUILD_DIR}/${DEMO_TARGET}"
  [[ -x "${demo}" ]] || die "demo program ${demo} was not built"
  log "running ${DEMO_TARGET} $*"
  "${demo}" "$@"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "${cmd}" in
    demo) cmd_demo "$@" ;;
    test)
      [[ $# -eq 0 ]] || die "'test' takes no arguments"
      cmd_test
      ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
