#!/usr/bin/env bash
# gsq_tool_test.sh GSQ MODELS_DIR WORK_DIR: the gsq tool as a user runs it, on ../shared/models.
# Exit 77 (ctest: skipped) when the models are absent.
#   - generate --temp 0 -n 256 prints the same story from stories260K.bin, stories260K.gguf and
#     stories260K-hf/ (llama2.c's story: the library test llama_inference_test checks generate()
#     against run.c's loop token for token and byte for byte);
#   - eval gives the same loss from the three sources;
#   - info, the integer engine on a quantized GGUF, and named errors.
set -uo pipefail
GSQ="$1" MODELS="$2" WORK="$3"
for f in stories260K.bin stories260K.gguf stories260K-hf/config.json tok512.bin rand256-q4_k_m.gguf; do
  if [[ ! -e "${MODELS}/${f}" ]]; then
    echo "skipped: ${MODELS}/${f} not found (set GSQ_MODELS_DIR)"
    exit 77
  fi
done
mkdir -p "${WORK}"
fail=0
check() {  # check DESCRIPTION COMMAND...: runs the command, fails the test on a non-zero status
  local what="$1"; shift
  if ! "$@"; then echo "FAILED: ${what}"; fail=1; fi
}

gen() { "${GSQ}" generate --temp 0 -n 256 "$@" 2>>"${WORK}/stderr.txt"; }
gen --model "${MODELS}/stories260K.bin" --tokenizer "${MODELS}/tok512.bin" >"${WORK}/bin.txt"
gen --model "${MODELS}/stories260K.gguf" >"${WORK}/gguf.txt"
gen --model "${MODELS}/stories260K-hf" --tokenizer "${MODELS}/tok512.bin" >"${WORK}/hf.txt"
check "the .bin story starts as llama2.c's" \
  grep -q '^Once upon a time, there was a little girl named Lily. She loved to play outside in the park.' "${WORK}/bin.txt"
check "GGUF prints the .bin story byte for byte" cmp "${WORK}/bin.txt" "${WORK}/gguf.txt"
check "Hugging Face prints the .bin story byte for byte" cmp "${WORK}/bin.txt" "${WORK}/hf.txt"
echo "story: $(wc -c <"${WORK}/bin.txt") bytes, identical from the three sources: $([[ ${fail} == 0 ]] && echo yes || echo no)"

# The same loss from the three sources (text: the story itself, 2 windows of 64).
ev() { "${GSQ}" eval --data "${WORK}/bin.txt" --seq 64 "$@" 2>/dev/null | grep -E '^(scored|loss)'; }
ev --model "${MODELS}/stories260K.bin" --tokenizer "${MODELS}/tok512.bin" >"${WORK}/eval-bin.txt"
ev --model "${MODELS}/stories260K.gguf" >"${WORK}/eval-gguf.txt"
ev --model "${MODELS}/stories260K-hf" --tokenizer "${MODELS}/tok512.bin" >"${WORK}/eval-hf.txt"
check "eval prints a loss" grep -q '^loss: ' "${WORK}/eval-bin.txt"
check "eval: GGUF equals .bin" cmp "${WORK}/eval-bin.txt" "${WORK}/eval-gguf.txt"
check "eval: HF equals .bin" cmp "${WORK}/eval-bin.txt" "${WORK}/eval-hf.txt"
cat "${WORK}/eval-bin.txt"

# info names the format, the shape and the tensor types.
"${GSQ}" info --model "${MODELS}/rand256-q4_k_m.gguf" >"${WORK}/info.txt" 2>&1
check "info: format" grep -q '^format: *GGUF' "${WORK}/info.txt"
check "info: dim 256" grep -q '^dim: *256$' "${WORK}/info.txt"
check "info: Q4_K tensors" grep -q 'Q4_K x' "${WORK}/info.txt"

# A quantized file runs on the integer engine by default.
"${GSQ}" generate --model "${MODELS}/rand256-q4_k_m.gguf" -n 8 --seed 3 >"${WORK}/q4.txt" 2>"${WORK}/q4.err"
check "Q4_K_M generates on the integer engine" grep -q 'GSE W4A8' "${WORK}/q4.err"

# export: the F32 GGUF and the llama2.c .bin written from the GGUF tell the same story; the
# exact frozen base (Q4_0/Q8_0 blocks) on the integer engine tells the story the F32 file tells
# with --gse 4-8, byte for byte (its blocks are the engine's own GSE codes).
"${GSQ}" export --model "${MODELS}/stories260K.gguf" --out "${WORK}/f32.gguf" >/dev/null 2>&1
gen --model "${WORK}/f32.gguf" >"${WORK}/export-f32.txt"
check "export: F32 GGUF tells the story" cmp "${WORK}/bin.txt" "${WORK}/export-f32.txt"
"${GSQ}" export --model "${MODELS}/stories260K.gguf" --format llama2c --out "${WORK}/x.bin" >/dev/null
gen --model "${WORK}/x.bin" --tokenizer "${MODELS}/tok512.bin" >"${WORK}/export-bin.txt"
check "export: llama2.c .bin tells the story" cmp "${WORK}/bin.txt" "${WORK}/export-bin.txt"
"${GSQ}" export --model "${MODELS}/stories260K.gguf" --base-only --out "${WORK}/base.gguf" >/dev/null 2>&1
"${GSQ}" info --model "${WORK}/base.gguf" >"${WORK}/base-info.txt"
check "export --base-only: Q4_0 blocks" grep -q 'Q4_0 x 30' "${WORK}/base-info.txt"
gen --model "${WORK}/base.gguf" >"${WORK}/base.txt"
gen --model "${MODELS}/stories260K.gguf" --gse 4-8 >"${WORK}/gse.txt"
check "export --base-only: the exact base on the engine" cmp "${WORK}/base.txt" "${WORK}/gse.txt"

# Errors are named, with exit status 1.
expect_error() {  # expect_error TEXT COMMAND...
  local want="$1"; shift
  local out status
  out="$("$@" 2>&1 >/dev/null)"; status=$?
  if [[ ${status} -ne 1 || "${out}" != *"${want}"* ]]; then
    echo "FAILED: '$*' gave status ${status} and: ${out}"; fail=1
  fi
}
expect_error "does not exist" "${GSQ}" info --model "${WORK}/missing.gguf"
expect_error "unknown option '--bogus'" "${GSQ}" generate --bogus
expect_error "--gse wants W-A" "${GSQ}" generate --model "${MODELS}/stories260K.gguf" --gse 4
printf 'GGUF\003\000\000\000' >"${WORK}/truncated.gguf"
expect_error "gguf: " "${GSQ}" info --model "${WORK}/truncated.gguf"
expect_error "is vocab_size right?" \
  "${GSQ}" generate --model "${MODELS}/stories260K.bin" --tokenizer "${MODELS}/vocab/tokenizer.bin"
exit ${fail}
