#!/usr/bin/env bash
# run.sh: the two commands the README names.
#   ./run.sh demo [args...]      build (release) and run the demo, passing args through
#   ./run.sh test                the CI matrix below, then a summary table (what .ci/run runs)
#   ./run.sh test --quick        only the first configuration: cmake --workflow --preset test
#   ./run.sh test <config>...    only the named configurations, e.g. ./run.sh test asan fuzz
# Both first install whatever Debian packages are missing (apt-get, via sudo when not root).
#
# The matrix: each configuration is a CMake workflow preset (CMakePresets.json) building in
# build/<preset>; they run in this order, and the command fails if any of them fails.
#   gcc       GCC release: tests, benchmarks, examples, -Werror (cmake --workflow --preset test)
#   clang     the same with Clang
#   isa-caps  the gcc build's tests again under GSQ_ISA=avx2 (no AVX-512) and GSQ_ISA=scalar
#   nosimd    the tests compiled with GSQ_DISABLE_SIMD (cmake -DGSQ_DISABLE_SIMD=ON: scalar only)
#   asan      the tests under AddressSanitizer + UndefinedBehaviorSanitizer (Clang, -O1 -g)
#   aarch64   cross-built for ARMv8.2-A+dotprod, run under qemu-aarch64 -cpu max
#   fuzz      libFuzzer targets in tests/fuzz (Clang, ASan + UBSan), each fuzzed for
#             GSQ_FUZZ_SECONDS (default 20; a CMake cache variable of the fuzz preset)
# Every suite but fuzz also runs isa.report (which kernels ran, checked against the CPU's
# features) and noexcept.abort (a -fno-exceptions program aborts with a "gsq:" message on a bad
# call).
set -euo pipefail

# The program `./run.sh demo` runs, relative to the release build directory.
DEMO_TARGET="examples/finetune"

# Debian packages the build needs. Each is installed only if dpkg says it is missing.
PACKAGES=(build-essential cmake libeigen3-dev catch2 libbenchmark-dev libopenblas-dev)
# And those the rest of the test matrix needs (not installed for `demo` or `test --quick`).
MATRIX_PACKAGES=(clang libclang-rt-dev libomp-dev g++-aarch64-linux-gnu qemu-user)

# The matrix, in order: configuration name, workflow preset, what it proves.
CONFIGS=(gcc clang isa-caps nosimd asan aarch64 fuzz)
declare -A WORKFLOW=([gcc]=test [clang]=clang [isa-caps]=isa-caps [nosimd]=nosimd [asan]=asan
                     [aarch64]=aarch64 [fuzz]=fuzz)
declare -A BUILD_OF=([gcc]=release [clang]=clang [isa-caps]=release [nosimd]=nosimd [asan]=asan
                     [aarch64]=aarch64 [fuzz]=fuzz)
declare -A ABOUT=(
  [gcc]="release, every test + benchmarks/examples built, -Werror"
  [clang]="release with Clang, every test"
  [isa-caps]="gcc build's tests under GSQ_ISA=avx2 and GSQ_ISA=scalar"
  [nosimd]="tests compiled with GSQ_DISABLE_SIMD (scalar kernels only)"
  [asan]="tests under ASan + UBSan (Clang, -O1 -g, assertions on)"
  [aarch64]="ARMv8.2-A+dotprod cross build, tests under qemu-aarch64 -cpu max"
  [fuzz]="libFuzzer + ASan + UBSan, each target for GSQ_FUZZ_SECONDS"
)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_DIR="${REPO_ROOT}/build/release"
LOG_DIR="${REPO_ROOT}/build/ci-logs"

log() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<USAGE
usage: ./run.sh demo [args...]      build in release mode and run ${DEMO_TARGET} with args
       ./run.sh test                run the whole test matrix (what CI runs), then a summary:
                                      ${CONFIGS[*]}
       ./run.sh test --quick        only the GCC release suite (cmake --workflow --preset test)
       ./run.sh test <config>...    only the named configurations, in matrix order
Each configuration is a CMake workflow preset building in build/<preset>; run one by hand with
cmake --workflow --preset <preset> (test, clang, isa-caps, nosimd, asan, aarch64, fuzz).
Logs of a matrix run: build/ci-logs/<config>.log.
USAGE
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# ensure_packages pkg...: installs the packages dpkg does not list as installed.
ensure_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "dpkg-query not found (not Debian/Ubuntu?): skipping package checks"
    return
  fi
  local missing=()
  local pkg
  for pkg in "$@"; do
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

# The compiler a build directory was configured with, e.g. "g++ (Debian 12.2.0-14) 12.2.0".
compiler_of() {
  local info
  info="$(ls "${REPO_ROOT}/build/$1"/CMakeFiles/*/CMakeCXXCompiler.cmake 2>/dev/null || true)"
  info="${info%%$'\n'*}"  # the first, if several CMake versions configured this directory
  [[ -n "${info}" ]] || return 0
  local cxx
  cxx="$(sed -n 's/^set(CMAKE_CXX_COMPILER "\(.*\)")$/\1/p' "${info}")"
  if [[ -n "${cxx}" ]]; then
    "${cxx}" --version 2>/dev/null | head -n1 || true
  fi
}

# What a configuration's log says: ctest's counts, the kernels isa.report saw, fuzz runs.
notes_of() {
  local config="$1" log="${LOG_DIR}/$1.log"
  [[ -f "${log}" ]] || return 0
  local notes=()
  local line
  # ctest's counts, one per test step (isa-caps has two: GSQ_ISA=avx2, then GSQ_ISA=scalar).
  local labels=()
  if [[ "${config}" == isa-caps ]]; then labels=("GSQ_ISA=avx2: " "GSQ_ISA=scalar: "); fi
  while IFS= read -r line; do
    notes+=("${labels[${#notes[@]}]:-}${line}")
  done < <(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "${log}" |
    sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+)/\2 tests, \1 failed/')
  local testlog="${REPO_ROOT}/build/${BUILD_OF[${config}]}/Testing/Temporary/LastTest.log"
  if [[ "${config}" != isa-caps && -f "${testlog}" && "${testlog}" -nt "${log}.start" ]]; then
    line="$(grep -Eo -m1 'matmul: [a-z0-9-]+, conversion: [a-z0-9-]+' "${testlog}" || true)"
    if [[ -n "${line}" ]]; then notes+=("${line}"); fi
    # The golden test's digests: the same in every configuration, or the promise is broken.
    line="$(grep -Eo -m1 'golden digests: LoRA 0x[0-9a-f]+, LoTA 0x[0-9a-f]+' "${testlog}" || true)"
    if [[ -n "${line}" ]]; then notes+=("${line}"); fi
    if [[ "${config}" == fuzz ]]; then
      # "N/M Testing: fuzz.<target>" heads each test's output; libFuzzer ends with "Done N runs".
      while IFS= read -r line; do notes+=("${line}"); done < <(
        awk '/Testing: fuzz\./ { sub(/.*Testing: fuzz\./, ""); t = $0 }
             /^Done [0-9]+ runs in/ { print t ": " $2 " runs in " $5 " s" }' "${testlog}")
    fi
  fi
  local IFS=';'
  printf '%s' "${notes[*]}" | sed 's/;/; /g'
}

run_config() {
  local config="$1"
  local preset="${WORKFLOW[${config}]}"
  local log="${LOG_DIR}/${config}.log"
  log "[${config}] ${ABOUT[${config}]}: cmake --workflow --preset ${preset}"
  : >"${log}.start"
  set +e
  (cd "${REPO_ROOT}" && cmake --workflow --preset "${preset}") 2>&1 | tee "${log}"
  local status=${PIPESTATUS[0]}
  set -e
  return "${status}"
}

cmd_test() {
  local configs=()
  if [[ $# -eq 1 && "$1" == "--quick" ]]; then
    configs=(gcc)
  elif [[ $# -eq 0 ]]; then
    configs=("${CONFIGS[@]}")
  else
    local c want
    for want in "$@"; do
      if [[ -z "${WORKFLOW[${want}]+x}" ]]; then
        die "unknown configuration '${want}' (known: ${CONFIGS[*]}, or --quick)"
      fi
    done
    for c in "${CONFIGS[@]}"; do  # matrix order, whatever the order given
      for want in "$@"; do
        if [[ "${want}" == "${c}" ]]; then configs+=("${c}"); fi
      done
    done
  fi

  if [[ "${configs[*]}" == gcc ]]; then
    ensure_packages "${PACKAGES[@]}"
  else
    ensure_packages "${PACKAGES[@]}" "${MATRIX_PACKAGES[@]}"
  fi
  check_cmake
  mkdir -p "${LOG_DIR}"

  local start=${SECONDS}
  local results=() seconds=() notes=() failed=0 config
  for config in "${configs[@]}"; do
    local t0=${SECONDS}
    if run_config "${config}"; then
      results+=(passed)
    else
      results+=(FAILED)
      failed=1
    fi
    seconds+=($((SECONDS - t0)))
    # Now, before a later configuration that shares the build (isa-caps) rewrites its ctest log.
    notes+=("$(notes_of "${config}")")
    log "[${config}] ${results[-1]} in ${seconds[-1]} s"
  done

  local total=$((SECONDS - start))
  printf '\n==> test matrix summary (%d s = %dm%02ds; logs in build/ci-logs/)\n' \
    "${total}" $((total / 60)) $((total % 60))
  printf '%-9s %-7s %7s  %s\n' configuration result seconds 'what ran'
  local i
  for i in "${!configs[@]}"; do
    config="${configs[${i}]}"
    printf '%-9s %-7s %7d  %s\n' "${config}" "${results[${i}]}" "${seconds[${i}]}" \
      "${ABOUT[${config}]}"
    local compiler
    compiler="$(compiler_of "${BUILD_OF[${config}]}")"
    if [[ -n "${compiler}" ]]; then printf '%26s%s\n' '' "compiler: ${compiler}"; fi
    if [[ -n "${notes[${i}]}" ]]; then printf '%26s%s\n' '' "${notes[${i}]}"; fi
  done
  if [[ ${failed} -ne 0 ]]; then
    printf '\nrun.sh: error: a configuration failed; see its log above or in build/ci-logs/\n' >&2
    return 1
  fi
  log "all configurations passed"
}

cmd_demo() {
  ensure_packages "${PACKAGES[@]}"
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
    test) cmd_test "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
