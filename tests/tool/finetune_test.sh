#!/usr/bin/env bash
# finetune_test.sh GSQ REPO WORK: gsq finetune as a user runs it, on the committed stories260K.
#   - it writes adapter.gguf, the PEFT pair, base.gguf and receipt.json;
#   - runs killed with SIGKILL at several points (a torn checkpoint write simulated too) or
#     stopped with SIGINT, then resumed with --resume, end with the same adapter.gguf bytes as an
#     uninterrupted run;
#   - a missing, foreign or corrupt checkpoint is a named error, never a silent restart;
#   - the adapter lowers the held-out loss of the base it was trained on, base.gguf + adapter.gguf
#     scores what the adapter scores, and the merged export generates the --lora text;
#   - gsq verify replays the receipt.
set -uo pipefail
GSQ="$1" REPO="$2" WORK="$3"
rm -rf "${WORK}" && mkdir -p "${WORK}" && cd "${WORK}" || exit 1
ln -s "${REPO}/models" models
MODEL=(--model models/stories260K.bin --tokenizer models/tok512.bin)
fail=0
check() { local what="$1"; shift; if ! "$@"; then echo "FAILED: ${what}"; fail=1; fi; }

# Training and held-out text written by the model itself (seeded: the same on every machine).
for s in $(seq 1 16); do "${GSQ}" generate "${MODEL[@]}" -n 200 --seed "${s}" 2>/dev/null; done >data.txt
for s in $(seq 101 108); do "${GSQ}" generate "${MODEL[@]}" -n 200 --seed "${s}" 2>/dev/null; done >held.txt
# A short run for the outputs, and a long one (checkpoints every 20 steps) to kill.
GOOD=(finetune "${MODEL[@]}" --data data.txt --steps 40 --seq 32 --batch 2)
RUN=(finetune "${MODEL[@]}" --data data.txt --steps 300 --seq 32 --batch 2 --lr 1e-3 --save-every 20)

"${GSQ}" "${GOOD[@]}" --out good >good.log 2>&1
for f in adapter.gguf adapter_config.json adapter_model.safetensors base.gguf receipt.json; do
  check "finetune writes ${f}" test -s "good/${f}"
done
"${GSQ}" "${RUN[@]}" --out full >full.log 2>&1
check "an uninterrupted run" test -s full/receipt.json
check "the checkpoint is removed after a finished run" test ! -e full/checkpoint.gsq

# Killed (SIGKILL) at several points, resumed until done.
kills=0
for delay in 0.4 0.8 1.2 1.6; do
  args=(--out killed)
  [[ -e killed/checkpoint.gsq ]] && args+=(--resume)
  "${GSQ}" "${RUN[@]}" "${args[@]}" >>killed.log 2>&1 &
  pid=$!
  sleep "${delay}"
  if kill -9 "${pid}" 2>/dev/null; then kills=$((kills + 1)); fi
  wait "${pid}" 2>/dev/null
  # A write torn by the kill leaves checkpoint.gsq.tmp beside the last good checkpoint.
  [[ -e killed/checkpoint.gsq ]] && head -c 100 killed/checkpoint.gsq >killed/checkpoint.gsq.tmp
  [[ -e killed/receipt.json ]] && break
done
if [[ ! -e killed/receipt.json ]]; then
  args=(--out killed)
  [[ -e killed/checkpoint.gsq ]] && args+=(--resume)
  "${GSQ}" "${RUN[@]}" "${args[@]}" >>killed.log 2>&1
fi
echo "SIGKILL: ${kills} kills, then resumed"
check "killed and resumed: adapter.gguf identical" cmp full/adapter.gguf killed/adapter.gguf
check "killed and resumed: PEFT identical" cmp full/adapter_model.safetensors killed/adapter_model.safetensors

# SIGINT writes a checkpoint and exits 130; --resume finishes identically.
"${GSQ}" "${RUN[@]}" --out interrupted --save-every 0 >interrupted.log 2>&1 &
pid=$!
sleep 0.8
kill -INT "${pid}" 2>/dev/null
wait "${pid}"
status=$?
if [[ ${status} -eq 130 ]]; then
  check "SIGINT leaves a checkpoint" test -s interrupted/checkpoint.gsq
  "${GSQ}" "${RUN[@]}" --out interrupted --save-every 0 --resume >>interrupted.log 2>&1
else
  echo "SIGINT arrived after the run ended (status ${status})"
fi
check "interrupted and resumed: adapter.gguf identical" cmp full/adapter.gguf interrupted/adapter.gguf

# Checkpoint errors are named; nothing restarts silently.
expect_error() {  # expect_error TEXT COMMAND...
  local want="$1"; shift
  local out status
  out="$("$@" 2>&1 >/dev/null)"; status=$?
  if [[ ${status} -ne 1 || "${out}" != *"${want}"* ]]; then
    echo "FAILED: '$*' gave status ${status} and: ${out}"; fail=1
  fi
}
expect_error "does not exist (nothing to resume" "${GSQ}" "${RUN[@]}" --out fresh --resume
mkdir -p corrupt && head -c 200 full/adapter.gguf >corrupt/checkpoint.gsq
expect_error "checkpoint" "${GSQ}" "${RUN[@]}" --out corrupt --resume
expect_error "exists: pass --resume" "${GSQ}" "${RUN[@]}" --out corrupt
"${GSQ}" "${RUN[@]}" --out foreign --steps 300 --save-every 20 >/dev/null 2>&1 &
pid=$!; sleep 0.8; kill -INT "${pid}" 2>/dev/null; wait "${pid}"
if [[ -e foreign/checkpoint.gsq ]]; then
  expect_error "was written for" "${GSQ}" "${RUN[@]}" --out foreign --resume --seed 9
fi

# The adapter on the base it was trained on (GSE-INT4, chosen from the adapter's metadata).
ev() { "${GSQ}" eval --data held.txt --seq 32 "$@" 2>/dev/null | sed -n 's/^loss: *\([0-9.]*\).*/\1/p'; }
base_loss="$(ev "${MODEL[@]}" --gse 4-8)"
gguf_loss="$(ev "${MODEL[@]}" --lora good/adapter.gguf)"
peft_loss="$(ev "${MODEL[@]}" --lora good)"
deploy_loss="$(ev --model good/base.gguf --tokenizer models/tok512.bin --lora good/adapter.gguf)"
echo "held-out loss: GSE-INT4 base ${base_loss}, with the adapter ${gguf_loss} (PEFT ${peft_loss}, base.gguf + adapter.gguf ${deploy_loss})"
check "the adapter lowers the held-out loss" awk -v a="${gguf_loss}" -v b="${base_loss}" 'BEGIN { exit !(a < b) }'
check "PEFT scores as adapter.gguf" test "${peft_loss}" = "${gguf_loss}"
check "base.gguf + adapter.gguf scores as trained" test "${deploy_loss}" = "${gguf_loss}"

# The merged export generates what --lora generates (float, F32 weights).
"${GSQ}" export "${MODEL[@]}" --lora good/adapter.gguf --out merged.gguf >/dev/null 2>&1
"${GSQ}" generate "${MODEL[@]}" --lora good/adapter.gguf --float --temp 0 -n 128 >lora.txt 2>/dev/null
"${GSQ}" generate --model merged.gguf --tokenizer models/tok512.bin --temp 0 -n 128 >merged.txt 2>/dev/null
check "merged export generates the --lora text" cmp lora.txt merged.txt

check "gsq verify replays the receipt" "${GSQ}" verify good/receipt.json --threads 3
exit ${fail}
