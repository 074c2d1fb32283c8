#!/usr/bin/env bash
# run.sh: the two commands the README names.
#   ./run.sh demo [args...]      build only the demo (workflow preset demo) and run it with args
#   ./run.sh test                the CI matrix below, then a summary table (what .ci/run runs)
#   ./run.sh test --quick        only the first configuration (gcc: cmake --workflow --preset test)
#   ./run.sh test <config>...    only the named configurations, e.g. ./run.sh test asan fuzz
# Both first install the Debian packages that are missing: scripts/install-deps.sh, which also
# runs alone.
#
# Each configuration is a workflow preset of CMakePresets.json, and its displayName says what it
# proves (cmake --workflow --list-presets); MATRIX below only orders them. The command fails if
# any configuration fails. The summary reads only files that the runs write:
#   <build dir>/gsq-build-info.txt            the compiler (the configure step writes it)
#   <build dir>/junit-<test preset>.xml       ctest's JUnit report, one per test step: the counts,
#                                             the golden test's digests, libFuzzer's "Done N runs"
#   <build dir>/isa-report-<test preset>.txt  isa.suite's line: the kernels the suite ran
# The build directory and the test steps come from the workflow's own output.
set -euo pipefail

# The matrix, in the order it runs: configuration names, each the name of its workflow preset
# unless written name=preset.
MATRIX=(gcc=test clang isa-caps nosimd asan aarch64 fuzz)

# The workflow preset `./run.sh demo` runs, and its program, relative to the build directory.
DEMO_PRESET="demo"
DEMO_PROGRAM="examples/finetune"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_DIR="${REPO_ROOT}/build/ci-logs"

log() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

config_name() { printf '%s' "${1%%=*}"; }
config_preset() { printf '%s' "${1#*=}"; }
# is_config entry word: whether word names the MATRIX entry (its configuration or preset name).
is_config() { [[ "$2" == "$(config_name "$1")" || "$2" == "$(config_preset "$1")" ]]; }
config_names() {
  local entry names=()
  for entry in "${MATRIX[@]}"; do names+=("$(config_name "${entry}")"); done
  printf '%s' "${names[*]}"
}

usage() {
  local entry
  cat <<USAGE
usage: ./run.sh demo [args...]      build only the demo (cmake --workflow --preset ${DEMO_PRESET})
                                    and run ${DEMO_PROGRAM} with args (--help lists them)
       ./run.sh test                run the whole test matrix (what CI runs), then a summary
       ./run.sh test --quick        only the first configuration ($(config_name "${MATRIX[0]}"))
       ./run.sh test <config>...    only the named configurations, in matrix order
The configurations and their workflow presets (cmake --workflow --preset <preset> runs one):
USAGE
  if command -v cmake >/dev/null 2>&1 && read_presets 2>/dev/null; then
    for entry in "${MATRIX[@]}"; do
      printf '  %-9s %-9s %s\n' "$(config_name "${entry}")" "$(config_preset "${entry}")" \
        "${ABOUT[$(config_preset "${entry}")]:-}"
    done
  else
    printf '  %s\n' "${MATRIX[@]}"
  fi
  echo "Logs of a matrix run: build/ci-logs/<config>.log. Packages: scripts/install-deps.sh."
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

# read_presets: fills ABOUT[preset] with the displayName of every workflow preset, from
# `cmake --workflow --list-presets`, whose lines read:  "name" - displayName
declare -A ABOUT=()
read_presets() {
  local listing line
  listing="$(cd "${REPO_ROOT}" && cmake --workflow --list-presets)" || return 1
  local re='^ +"([^"]+)"( +- (.*))?$'
  while IFS= read -r line; do
    if [[ "${line}" =~ ${re} ]]; then ABOUT["${BASH_REMATCH[1]}"]="${BASH_REMATCH[3]}"; fi
  done <<<"${listing}"
  [[ ${#ABOUT[@]} -gt 0 ]]
}

# run_workflow preset log: runs the workflow preset, its output both shown and kept in log.
run_workflow() {
  local status
  set +e
  (cd "${REPO_ROOT}" && cmake --workflow --preset "$1") 2>&1 | tee "$2"
  status=${PIPESTATUS[0]}
  set -e
  return "${status}"
}

# What a workflow's output says about its steps: the build directory its configure step wrote,
# and the test presets of its test steps, in order.
build_dir_of() {
  sed -n 's/^-- Build files have been written to: //p' "$1" | tail -n1
}
test_presets_of() {
  sed -n 's/^Executing workflow step [0-9]* of [0-9]*: test preset "\(.*\)"$/\1/p' "$1"
}

# junit_attribute file name: an attribute of the <testsuite> element of ctest's JUnit report.
junit_attribute() {
  sed -n "/<testsuite/,/>/ s/.*[[:space:]]$2=\"\([0-9]*\)\".*/\1/p" "$1" | head -n1
}

# notes_of log start-marker: the summary's lines for one configuration, read from the
# files its run wrote (those older than start-marker are from an earlier run and are ignored).
notes_of() {
  local log="$1" start="$2"
  local build line
  build="$(build_dir_of "${log}")"
  [[ -n "${build}" ]] || return 0
  if [[ -f "${build}/gsq-build-info.txt" && "${build}/gsq-build-info.txt" -nt "${start}" ]]; then
    grep -m1 '^compiler: ' "${build}/gsq-build-info.txt" || true
  fi
  local presets=() preset
  mapfile -t presets < <(test_presets_of "${log}")
  for preset in "${presets[@]}"; do
    local label="" junit="${build}/junit-${preset}.xml" isa="${build}/isa-report-${preset}.txt"
    if [[ ${#presets[@]} -gt 1 ]]; then label="[${preset}] "; fi
    if [[ ! -f "${junit}" || ! "${junit}" -nt "${start}" ]]; then
      printf '%sno test results (no fresh %s)\n' "${label}" "${junit#"${REPO_ROOT}/"}"
      continue
    fi
    local tests failures skipped disabled
    tests="$(junit_attribute "${junit}" tests)"
    failures="$(junit_attribute "${junit}" failures)"
    skipped="$(junit_attribute "${junit}" skipped)"
    disabled="$(junit_attribute "${junit}" disabled)"
    tests="${tests:-0}" failures="${failures:-0}" skipped="${skipped:-0}" disabled="${disabled:-0}"
    printf '%stests: %d passed, %d skipped, %d failed' "${label}" \
      $((tests - failures - skipped - disabled)) "${skipped}" "${failures}"
    if [[ "${disabled}" -gt 0 ]]; then printf ', %d disabled' "${disabled}"; fi
    printf ' (of %d)\n' "${tests}"
    if [[ -f "${isa}" && "${isa}" -nt "${start}" ]]; then
      line="$(grep -Eo -m1 'matmul: [a-z0-9-]+, conversion: [a-z0-9-]+' "${isa}" || true)"
      if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    fi
    # The golden test's digests: the same in every configuration, or the promise is broken.
    line="$(grep -Eo -m1 'golden digests: LoRA 0x[0-9a-f]+, LoTA 0x[0-9a-f]+' "${junit}" || true)"
    if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    line="$(grep -Eo -m1 'golden model digest: 0x[0-9a-f]+, GSE attention 0x[0-9a-f]+' "${junit}" || true)"
    if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    line="$(grep -Eo -m1 'golden inference digest: float 0x[0-9a-f]+, GSE 0x[0-9a-f]+' "${junit}" || true)"
    if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    line="$(grep -Eo -m1 'golden attention digest: 0x[0-9a-f]+' "${junit}" || true)"
    if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    line="$(grep -Eo -m1 'golden float model digest: 0x[0-9a-f]+' "${junit}" || true)"
    if [[ -n "${line}" ]]; then printf '%s%s\n' "${label}" "${line}"; fi
    # libFuzzer ends its output with "Done N runs in S second(s)".
    awk -v label="${label}" '
      /<testcase name="fuzz\./ { t = $0; sub(/.*<testcase name="fuzz\./, "", t); sub(/".*/, "", t) }
      /(^|>)Done [0-9]+ runs in [0-9]+ second/ {
        line = $0; sub(/.*Done /, "", line); split(line, w, " ")
        printf "%sfuzz.%s: %s runs in %s s\n", label, t, w[1], w[4]
      }' "${junit}"
  done
}

cmd_test() {
  local selected=()
  if [[ $# -eq 1 && "$1" == "--quick" ]]; then
    selected=("${MATRIX[0]}")
  elif [[ $# -eq 0 ]]; then
    selected=("${MATRIX[@]}")
  else
    local want entry found
    for want in "$@"; do
      found=0
      for entry in "${MATRIX[@]}"; do
        if is_config "${entry}" "${want}"; then found=1; fi
      done
      [[ ${found} -eq 1 ]] ||
        die "unknown configuration '${want}' (known: $(config_names), or --quick)"
    done
    for entry in "${MATRIX[@]}"; do  # matrix order, whatever the order given
      for want in "$@"; do
        if is_config "${entry}" "${want}"; then selected+=("${entry}"); break; fi
      done
    done
  fi

  # The first configuration needs the release build's packages only; the others need more.
  if [[ "${selected[*]}" == "${MATRIX[0]}" ]]; then
    "${REPO_ROOT}/scripts/install-deps.sh" build
  else
    "${REPO_ROOT}/scripts/install-deps.sh" matrix
  fi
  check_cmake
  read_presets || die "cmake --workflow --list-presets lists no workflow presets"
  local entry preset
  for entry in "${selected[@]}"; do
    preset="$(config_preset "${entry}")"
    [[ -n "${ABOUT[${preset}]+x}" ]] ||
      die "MATRIX names workflow preset '${preset}', which CMakePresets.json lacks"
  done
  mkdir -p "${LOG_DIR}"

  local start=${SECONDS}
  local results=() seconds=() notes=() failed=0
  for entry in "${selected[@]}"; do
    local config preset t0=${SECONDS}
    config="$(config_name "${entry}")"
    preset="$(config_preset "${entry}")"
    local log="${LOG_DIR}/${config}.log"
    log "[${config}] ${ABOUT[${preset}]}: cmake --workflow --preset ${preset}"
    : >"${log}.start"
    if run_workflow "${preset}" "${log}"; then
      results+=(passed)
    else
      results+=(FAILED)
      failed=1
    fi
    seconds+=($((SECONDS - t0)))
    notes+=("$(notes_of "${log}" "${log}.start")")
    log "[${config}] ${results[-1]} in ${seconds[-1]} s"
  done

  local total=$((SECONDS - start))
  printf '\n==> test matrix summary (%d s = %dm%02ds; logs in build/ci-logs/, JUnit reports in\n' \
    "${total}" $((total / 60)) $((total % 60))
  printf '    build/<configure preset>/junit-<test preset>.xml)\n'
  printf '%-9s %-7s %7s  %s\n' config result seconds 'what ran'
  local i line
  for i in "${!selected[@]}"; do
    local preset
    preset="$(config_preset "${selected[${i}]}")"
    printf '%-9s %-7s %7d  %s\n' "$(config_name "${selected[${i}]}")" "${results[${i}]}" \
      "${seconds[${i}]}" "${ABOUT[${preset}]}"
    while IFS= read -r line; do
      if [[ -n "${line}" ]]; then printf '%27s%s\n' '' "${line}"; fi
    done <<<"${notes[${i}]}"
  done
  if [[ ${failed} -ne 0 ]]; then
    printf '\nrun.sh: error: a configuration failed; see its log above or in build/ci-logs/\n' >&2
    return 1
  fi
  log "all configurations passed"
}

cmd_demo() {
  # Each phase is timed (seconds since this command began), so that a slow run says where its
  # time went: packages, the workflow's configure and build steps, the demo itself.
  local t0=${SECONDS}
  "${REPO_ROOT}/scripts/install-deps.sh" build
  local t_packages=$((SECONDS - t0))
  check_cmake
  mkdir -p "${LOG_DIR}"
  local log="${LOG_DIR}/demo.log"
  log "[${t_packages} s] configure and build the demo: cmake --workflow --preset ${DEMO_PRESET}"
  local status line
  set +e
  (cd "${REPO_ROOT}" && cmake --workflow --preset "${DEMO_PRESET}") 2>&1 | tee "${log}" |
    while IFS= read -r line; do
      if [[ "${line}" == "Executing workflow step "* ]]; then
        printf '[%d s] %s\n' $((SECONDS - t0)) "${line}"
      else
        printf '%s\n' "${line}"
      fi
    done
  status=${PIPESTATUS[0]}
  set -e
  [[ ${status} -eq 0 ]] || die "the demo did not build (log: ${log})"
  local t_built=$((SECONDS - t0))
  local build
  build="$(build_dir_of "${log}")"
  [[ -n "${build}" ]] || die "no build directory in the output of the ${DEMO_PRESET} workflow"
  local demo="${build}/${DEMO_PROGRAM}"
  [[ -x "${demo}" ]] || die "demo program ${demo} was not built"
  log "[${t_built} s] running ${DEMO_PROGRAM} $*"
  cd "${REPO_ROOT}"
  "${demo}" "$@"
  log "demo done in $((SECONDS - t0)) s: packages ${t_packages} s, configure and build" \
    "$((t_built - t_packages)) s, the demo $((SECONDS - t0 - t_built)) s"
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
