#!/usr/bin/env bash
# verify_test.sh GSQ REPO WORK [EMULATOR...]: `gsq verify` of a committed receipt
# (receipt-stories260k.json: 40 steps of GSQ 8-8-8 on the committed stories260K, made on an
# AVX-512 machine).  The training text is generated here by seeded sampling, which is the same on
# every ISA, so the receipt's data sha256 must match; then every output of the replayed run must
# hash as the receipt says.  Run by every configuration of the matrix (aarch64 under qemu), this
# proves a fine-tuning run bit-identical across compilers, ISAs and thread counts.  If a change
# alters training on purpose, regenerate the receipt (the commands below, then copy
# good/receipt.json) and say why in the commit.
set -uo pipefail
GSQ="$1" REPO="$2" WORK="$3"
shift 3
RUN=("$@" "${GSQ}")
rm -rf "${WORK}" && mkdir -p "${WORK}" && cd "${WORK}" || exit 1
ln -s "${REPO}/models" models
for s in $(seq 1 16); do
  "${RUN[@]}" generate --model models/stories260K.bin --tokenizer models/tok512.bin -n 200 \
    --seed "${s}" 2>/dev/null
done >data.txt
# The receipt was made with:
#   gsq finetune --model models/stories260K.bin --tokenizer models/tok512.bin --data data.txt \
#     --steps 40 --seq 32 --batch 2 --out good
"${RUN[@]}" verify "${REPO}/tests/tool/receipt-stories260k.json" --threads 2 --keep replay
